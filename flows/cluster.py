"""Ray: where the families train. Locally a private Ray (pinned CPUs, no dashboard, loopback);
``ray.address`` in params, the flow's ``ray_address`` or ``RAY_ADDRESS`` joins a cluster.

Workers run plain functions (``tasks.train.train_family``): no Prefect inside a worker, so no
worker ever starts a Prefect server of its own. Paths and the MLflow store are made absolute
on the driver, so a worker finds them whatever its working directory (on a multi-node
cluster they must be on storage every node mounts, and genzoo installed on every node).
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genzoo.tasks.config import Params

log = logging.getLogger("genzoo.cluster")


def absolute(params: Params) -> Params:
    """``params`` with every path absolute (resolved against the driver's directory)."""
    data = params.data.model_copy(
        update={k: str(Path(getattr(params.data, k)).resolve()) for k in ("raw_dir", "prepared_dir")}
    )
    run = params.run.model_copy(
        update={k: str(Path(getattr(params.run, k)).resolve()) for k in ("runs_dir", "checkpoints_dir")}
    )
    return params.model_copy(update={"data": data, "run": run})


@contextmanager
def connected(params: Params, address: str | None = None):
    """Join the cluster at ``address`` / ``ray.address`` / ``RAY_ADDRESS``, else start a local
    Ray sized by ``ray.*``; a Ray this started is shut down on exit, one already up is kept."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    address = address or params.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace="genzoo", log_to_driver=False)
        log.info("joined Ray cluster at %s: %s", address, ray.cluster_resources())
    else:
        ray.init(
            address="local",  # always a new private Ray, never one a `ray start` left on this machine
            num_cpus=params.ray.num_cpus or os.cpu_count(),
            num_gpus=params.ray.num_gpus,
            object_store_memory=params.ray.object_store_mb * 2**20,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            namespace="genzoo",
            log_to_driver=False,
            configure_logging=False,
        )
        log.info("started a local Ray: %s", ray.cluster_resources())
    try:
        yield ray
    finally:
        ray.shutdown()


def check_fits(params: Params, families: list[str]) -> None:
    """Fail before any compute when no node of the cluster could ever hold a family's task
    (it would wait forever): names the ``ray.resources`` key and what the nodes have."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for family in families:
        res = params.resources(family)
        need = {"CPU": res.num_cpus, "GPU": res.num_gpus}
        if res.memory_mb:
            need["memory"] = res.memory_mb * 2**20
        if not any(all(node.get(k, 0) >= v for k, v in need.items() if v) for node in nodes):
            have = [{k: node.get(k, 0) for k in need} for node in nodes]
            raise ValueError(
                f"ray.resources.{family}: no Ray node can hold num_cpus={res.num_cpus}, "
                f"num_gpus={res.num_gpus}, memory_mb={res.memory_mb} (nodes have {have})"
            )


def _on_node(fn: str, tracking_uri: str | None, *args) -> Any:
    """Run ``module:function`` in a Ray worker, MLflow pointed where the driver's is."""
    import importlib

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    module, name = fn.split(":")
    return getattr(importlib.import_module(module), name)(*args)


def train_here(params: Params, family: str, run_id: str | None, tags: dict[str, str]) -> dict[str, Any]:
    """Train ``family`` in this worker, its MLflow run tagged with the Ray node and host."""
    import ray

    from genzoo.tasks.train import train_family

    node = ray.get_runtime_context().get_node_id()
    where = {"genzoo.ray_node": node, "genzoo.host": socket.gethostname()}
    metrics = train_family(params, family, progress=False, run_id=run_id, tags={**tags, **where})
    return {**metrics, "ray_node": node, "host": where["genzoo.host"]}


def submit(params: Params, family: str, name: str, fn: str, *args, tracking_uri: str | None = None) -> Any:
    """Run ``fn`` ("module:function") with ``args`` as a Ray task with ``family``'s resources;
    returns the ObjectRef. A dead worker or node is re-run by Ray up to ``ray.max_retries``
    times (training resumes from its checkpoint, finished work is skipped); an exception is
    a bug or bad input, not Ray's to retry."""
    import ray

    res = params.resources(family)
    options: dict[str, Any] = {
        "num_cpus": res.num_cpus,
        "num_gpus": res.num_gpus,
        "max_retries": params.ray.max_retries,
        "retry_exceptions": False,
        "name": name,
    }
    if res.memory_mb:
        options["memory"] = res.memory_mb * 2**20
    return ray.remote(_on_node).options(**options).remote(fn, tracking_uri, *args)


def submit_training(
    params: Params, family: str, *, run_id: str | None, tracking_uri: str | None, tags: dict[str, str]
) -> Any:
    """``family``'s training as a Ray task (``train-<family>``); returns the ObjectRef."""
    return submit(params, family, f"train-{family}", "genzoo.flows.cluster:train_here", params, family, run_id, tags,
                  tracking_uri=tracking_uri)  # fmt: skip
