"""MLflow tracking against a real sqlite store: concurrent writers lose no metric rows. (A
pipeline's nested runs, per-step metrics, artifacts, registered models and sampling a registered
version: tests/flows/test_pipeline.py, on the flow's first run.)"""

import multiprocessing as mp

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


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
