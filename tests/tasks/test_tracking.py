"""MLflow tracking against a real sqlite store: nested runs, metric rows, artifacts,
the model registry, sampling a registered version, and concurrent writers."""

import json
import multiprocessing as mp

import numpy as np
import pytest
import yaml

from tests.conftest import tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def test_pipeline_run_nests_families_logs_metrics_and_registers_models(store, tmp_path, capsys):
    from genzoo.flows.cli import main
    from genzoo.tasks.tracking import client

    raw = tiny_params(tmp_path, steps=20)
    raw["run"]["track"] = True
    raw["usefulness"]["families"] = []  # (its figures in MLflow: tests/flows/test_pipeline.py)
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    assert main(["run", "--params", str(pfile), "--families", "vae,gan", "-q"]) == 0

    c = client()
    exp = c.get_experiment_by_name("genzoo")
    runs = {r.info.run_name: r for r in c.search_runs([exp.experiment_id])}
    assert set(runs) == {"pipeline", "vae", "gan"}
    parent = runs["pipeline"].info.run_id
    for fam in ("vae", "gan"):
        r = runs[fam]
        assert r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent
        assert r.data.params["train.steps"] == "20" and "net.latent_dim" in r.data.params
        assert r.data.tags["genzoo.data_sha256"]
        key = "neg_elbo" if fam == "vae" else "d_loss"
        history = c.get_metric_history(r.info.run_id, key)
        assert [m.step for m in history] == [5, 10, 15, 20]  # every log step, none lost
        names = {a.path for a in c.list_artifacts(r.info.run_id)} | {
            a.path for a in c.list_artifacts(r.info.run_id, "model")
        }
        assert {
            "samples.png",
            "loss.png",
            "curve.csv",
            "config.json",
            "model/model.json",
            "model/model.safetensors",
        } <= names
        versions = c.search_model_versions(f"name='{fam}'")
        assert [str(v.version) for v in versions] == ["1"] and versions[0].run_id == r.info.run_id
        metrics = json.loads((tmp_path / "runs" / fam / "metrics.json").read_text())
        assert metrics["mlflow"]["model_uri"] == f"models:/{fam}/1"
    assert runs["pipeline"].info.status == "FINISHED"

    out = tmp_path / "from_registry"
    assert (
        main(
            [
                "sample",
                "--params",
                str(pfile),
                "--model",
                "models:/vae/1",
                "--n",
                "6",
                "--out",
                str(out),
                "-q",
            ]
        )
        == 0
    )
    with np.load(f"{out}.npz") as z:
        assert z["images"].shape == (6, 1, 8, 8)


def _writer(uri: str, run_id: str, n: int) -> None:
    import os

    os.environ["MLFLOW_TRACKING_URI"] = uri
    from genzoo.tasks.tracking import MlflowLogger, client

    logger = MlflowLogger(client(uri), run_id)
    for step in range(1, n + 1):
        logger.on_log(step, {"loss": 1.0 / step, "aux": float(step)})


def test_concurrent_writers_lose_no_metric_rows(store):
    from genzoo.tasks.tracking import client, prepare_store, start_run

    c = client(store)
    exp = prepare_store(store)
    run_ids = [start_run(c, exp, f"w{i}").info.run_id for i in range(6)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(store, rid, 60)) for rid in run_ids]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * 6
    for rid in run_ids:
        assert len(c.get_metric_history(rid, "loss")) == 60
        assert len(c.get_metric_history(rid, "aux")) == 60
