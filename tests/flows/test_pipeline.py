"""The Prefect flow for real: a temporary Prefect server, a local Ray, an MLflow sqlite store."""

import errno
import json
import logging
import os
import re
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import ray
import yaml
from prefect import task

from genzoo.flows import cli, cluster
from genzoo.flows import pipeline as pl
from genzoo.flows.cluster import absolute, submit_training
from genzoo.tasks import tracking
from genzoo.tasks.config import validate
from genzoo.tasks.prepare import prepare
from tests.conftest import TINY, lock_held, own_processes, tiny_params
from tests.conftest import logged as messages

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (the flow keeps a Ray it did not start)."""
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def _write(tmp_path, raw) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_a_capped_dataset_and_images_that_lowered_accuracy_are_said_in_the_runs_lines():
    """The quick profile's dataset of large images holds fewer per class than its recipe's
    per_class: the run's line says what capped it (it said "(25 per class)" alone, the card 100).
    A family whose images lowered every classifier's mean accuracy at every real share is a
    warning: "cnn -31.9 ± 105.9" over 2 seeds read as no verdict where both seeds lost 24 and 40
    points. Each share's interval says what it is taken over."""
    from genzoo.tasks.augment import harmful

    manifest = {
        "n": 75, "families": {"vae": {}}, "counts_per_class": [25, 25, 25], "shape": [3, 32, 32],
        "levels": 32, "num_classes": 3,
        "recipe": {"per_class": 100, "sample_pixels": 25600, "class_ratios": None},
        "filters": {"rejected": {"low_confidence": 0, "copies": 2}},
    }  # fmt: skip
    path = Path("data/augment/synthetic")
    capped = (
        "; augment.sample_pixels=25600 caps each family's draw at 25 of the 100 asked per class "
        "(-o augment.sample_pixels=null lifts it)"
    )
    assert pl.dataset_line(path, manifest) == (
        f"data/augment/synthetic: 75 images from vae (25 per class{capped}); draws dropped: 0 low "
        "confidence, 2 copies"
    )
    # two families (the classes hold both), or class ratios of their own: the cap is before them
    two = manifest | {"n": 150, "families": {"vae": {}, "gan": {}}, "counts_per_class": [50, 50, 50]}
    assert f"(50 per class{capped}); " in pl.dataset_line(path, two)
    ratios = manifest | {"n": 150, "counts_per_class": [100, 25, 25]}
    ratios["recipe"] = manifest["recipe"] | {"class_ratios": {"0": 4.0}}
    assert f"(25-100 per class{capped}); " in pl.dataset_line(path, ratios)
    # uncapped: as many as asked (digits' 8x8 under the same cap, or no cap)
    small = manifest | {"shape": [1, 8, 8]}
    assert "(25 per class); " in pl.dataset_line(path, small)
    manifest["recipe"]["sample_pixels"] = None
    assert "(25 per class); " in pl.dataset_line(path, manifest)
    warned = (
        "vae: adding its images lowered every classifier's mean accuracy by more than half a point at "
        "every real share measured (-31.9 to -4.2 points): a dataset of them may make a classifier worse "
        "(runs/evaluation/vae/usefulness.json)"
    )
    lifts = {"1.0": {"cnn": -0.319, "logistic": -0.042}}
    assert harmful("vae", lifts, "runs/evaluation/vae/usefulness.json") == warned
    # one classifier or one share that helped, held level or lost less than half a point: none
    assert harmful("vae", {**lifts, "0.1": {"cnn": 0.004, "logistic": -0.03}}, "u.json") is None
    assert harmful("vae", {"1.0": {"cnn": -0.004, "logistic": -0.04}}, "u.json") is None
    assert harmful("vae", {"1.0": {"cnn": -0.005, "logistic": -0.04}}, "u.json") is None  # half a point
    assert harmful("vae", {"1.0": {"cnn": float("nan"), "logistic": -0.04}}, "u.json") is None
    assert harmful("vae", {}, "u.json") is None
    # the intervals' ground, share by share: the seeds of one subset, or the real subsets
    one = {"cnn": {"lift": {"mean": 0, "ci95": 1, "per_seed": [0.1, -0.1]}}}
    assert pl._over(one) == "over 2 classifier seeds"
    assert pl._over({"cnn": {"lift": {"over": "subsets", "per_subset": [0, 0, 0]}}}) == "over 3 real subsets"


def test_the_figures_artifact_embeds_sample_grids_up_to_its_size_cap(tmp_path, monkeypatch):
    """Each family's grid is embedded in the run's figures artifact, until the artifact's cap:
    the rest are named, so five families of large images make no artifact of tens of MB."""
    import base64

    monkeypatch.setattr(pl, "EMBED_TOTAL_BYTES", 2500)
    monkeypatch.setattr(pl, "EMBED_MAX_BYTES", 2000)
    families = {"gan": 900, "vae": 1200, "ddpm": 900, "pixelcnn": 3000}  # bytes of each samples.png
    for f, n in families.items():
        (tmp_path / f).mkdir()
        (tmp_path / f / "samples.png").write_bytes(bytes(range(256)) * (n // 256) + bytes(n % 256))
    result = {
        "trained": {f: {} for f in families},
        "figures": {f: {} for f in families},
        "pipeline_seconds": 1,
    }
    md = pl.figures_markdown(result, tmp_path)
    shown = {f for f in families if f"![{f}'s samples](data:image/png;base64," in md}
    assert shown == {"gan", "vae"}, md[:500]  # 900 + 1200 of 2500; ddpm's 900 past the cap; pixelcnn's 3000
    gan = base64.b64encode((tmp_path / "gan" / "samples.png").read_bytes()).decode()
    assert f"data:image/png;base64,{gan})" in md
    assert f"too large to show here; open `{tmp_path / 'ddpm' / 'samples.png'}`" in md
    assert f"too large to show here; open `{tmp_path / 'pixelcnn' / 'samples.png'}`" in md


def test_flow_trains_in_parallel_tracks_and_reruns_only_what_changed(
    tmp_path, monkeypatch, local_ray, caplog, capsys
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw = tiny_params(tmp_path, steps=12, families=["vae", "gan", "pixelcnn"], useful=True, detect=True)
    raw["run"]["track"] = True
    pfile = _write(tmp_path, raw)

    with caplog.at_level(logging.INFO):
        first = pl.pipeline(params_file=pfile)
    # the benchmarks' figures, as a person reads them in the console and the Prefect UI
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("evaluator: test accuracy") for m in said)
    assert "gan: generators on 1 real subset: 1 trained" in said
    assert not any(pl.REUSED in m for m in said)  # every stage computed its figures
    num, pct, pts = r"\d\.\d{3}", r"\d+\.\d%", r"[+-]\d+\.\d ± \d+\.\d"
    acc, lift = f"cnn {pct}, logistic {pct}", f"cnn {pts}, logistic {pts}"
    for line in (
        rf"pixelcnn: anomaly AUROC by likelihood: \w+ {num}(, \w+ {num})+",
        rf"usefulness reference, real data alone: 20% real: {acc}; 100% real: {acc}",
        rf"gan: trained on synthetic alone: {acc}; added to the real images with the dataset's recipe "
        rf"\(plain\), accuracy change in points, mean ± 95% interval: "
        rf"at 20% real \(over 2 classifier seeds\): {lift}; at 100% real \(over 2 classifier seeds\): {lift}",
        r".+: \d+ images from [\w, ]+ \(\d+(-\d+)? per class\); draws dropped: \d+ [a-z ]+(, \d+ [a-z ]+)*",
    ):
        assert any(re.fullmatch(line, m) for m in said), (line, said)
    # images that lowered every classifier's mean accuracy: said as a warning (a wide interval hid
    # it), by the usefulness stage and in the dataset drawn from them
    u = json.loads((tmp_path / "runs" / "evaluation" / "gan" / "usefulness.json").read_text())
    worse = all(v["lift"]["mean"] < -0.005 for per in u["augmentation"].values() for v in per.values())
    harm = "gan: adding its images lowered every classifier's mean accuracy"
    assert any(m.startswith(harm) for m in said) == worse, said
    dataset = json.loads((tmp_path / "augment" / "synthetic" / "manifest.json").read_text())
    assert any(w.startswith(harm) for w in dataset.get("warnings", [])) == worse, dataset.get("warnings")
    # `best` (augment.families) chose among the measured families (gan); those the judges rank
    # ahead of it, unmeasured, are named in the run's log as in the dataset's manifest
    best = json.loads((tmp_path / "augment" / "synthetic" / "manifest.json").read_text())["best"]
    assert best["family"] == "gan" and best["measured"] == ["gan"]
    ahead = [m for m in said if m.startswith("`best` is gan, the best of the families measured")]
    assert len(ahead) == bool(best["ahead_not_measured"]), said
    assert all(", ".join(best["ahead_not_measured"]) + " scored better by fd_rank" in m for m in ahead)
    trained = first["trained"]
    assert sorted(trained) == ["gan", "pixelcnn", "vae"]
    assert not any(m["cached"] for m in trained.values())
    for fam, m in trained.items():
        assert m["steps"] == 12 and (tmp_path / "runs" / fam / "model.safetensors").exists()

    # MLflow: a FINISHED parent, one FINISHED nested run per family with per-step metrics,
    # tags naming the Prefect flow run and the Ray node, and a registered model version
    c = tracking.client(uri)
    parent = c.get_run(first["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.info.run_name == "pipeline"
    # what made it, in the runs list (every parent is "pipeline") and as its description
    assert parent.data.tags["genzoo.command"] == f"genzoo run --params {pfile}", parent.data.tags
    assert (
        parent.data.tags["mlflow.note.content"]
        == f"`genzoo run --params {pfile}`, families gan, pixelcnn, vae"
    )
    # the parent run holds what the run made of all the families: its report and dataset card
    assert {a.path for a in c.list_artifacts(parent.info.run_id, "report")} == {
        "report/index.html", "report/summary.json", "report/families.csv"}  # fmt: skip
    assert {a.path for a in c.list_artifacts(parent.info.run_id, "dataset")} == {
        "dataset/README.md", "dataset/manifest.json"}  # fmt: skip
    # the UI opens the experiment as model training; the parent run holds each family's figures
    exp = c.get_experiment(parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    summary = parent.data.metrics
    for fam in ("vae", "gan", "pixelcnn"):
        assert summary[f"{fam}.fd"] == pytest.approx(first["evaluate"][fam]["fd"])
        assert summary[f"{fam}.recall"] == pytest.approx(first["evaluate"][fam]["recall"])
        assert summary[f"{fam}.train_seconds"] == pytest.approx(trained[fam]["train_seconds"])
        assert summary[f"{fam}.steps"] == 12
    assert summary["pixelcnn.test_bpd"] == pytest.approx(trained["pixelcnn"]["test_bpd"])
    assert "gan.test_bpd" not in summary  # a GAN has no likelihood
    assert first["figures"]["vae"]["bpd_estimator"] == "bound"
    flow_run_id = parent.data.tags["genzoo.prefect_flow_run"]
    assert flow_run_id
    children = c.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.tags["genzoo.family"] for r in children) == ["gan", "pixelcnn", "vae"]
    for r in children:
        assert r.info.status == "FINISHED"
        assert r.data.tags["genzoo.prefect_flow_run"] == flow_run_id
        assert r.data.tags["genzoo.ray_node"] == trained[r.data.tags["genzoo.family"]]["ray_node"]
        loss = {"gan": "d_loss", "vae": "neg_elbo", "pixelcnn": "nll"}[r.data.tags["genzoo.family"]]
        history = c.get_metric_history(r.info.run_id, loss)
        assert [h.step for h in history] == [5, 10, 12]  # log_every=5 and the last step: all landed
        assert r.data.params["train.steps"] == "12" and any(k.startswith("net.") for k in r.data.params)
        assert (
            r.data.tags["genzoo.data_sha256"]
            and r.data.tags["mlflow.runName"] == r.data.tags["genzoo.family"]
        )
        names = {a.path for a in c.list_artifacts(r.info.run_id, "model")}
        assert {"model/model.json", "model/model.safetensors"} <= names
        versions = c.search_model_versions(f"name='{r.data.tags['genzoo.family']}'")
        assert [str(v.version) for v in versions] == ["1"] and versions[0].run_id == r.info.run_id
        # what the registry shows of a version: its profile, data and how to train it again
        fam = r.data.tags["genzoo.family"]
        source = "digits"  # the default
        assert versions[0].tags == {
            "genzoo.profile": "none",
            "genzoo.data_source": source,
            "genzoo.steps": "12",
            "genzoo.runs_dir": str(tmp_path / "runs"),
        }
        assert versions[0].description.startswith(f"{fam}: 12 steps on digits, profile none")
        assert versions[0].description.endswith(
            f"trained again by `genzoo train --family {fam} --params {pfile}`"
        )
        logged = c.get_run(r.info.run_id).data.metrics
        assert "quality.fd" in logged and "quality.memorization.ratio" in logged  # the evaluate stage
        assert "quality.ci95.fd" in logged and "quality.images_per_second" in logged
        artifacts = [a.path for a in c.list_artifacts(r.info.run_id)]
        assert {"quality.json", "samples.png", "loss.png", "curve.csv", "config.json"} <= set(artifacts)
        assert "report" not in artifacts  # the pipeline's, in its own run (below)
        if r.data.tags["genzoo.family"] == "pixelcnn":  # detect.families: the anomaly benchmark
            assert "anomaly.rotated_180.likelihood.auroc" in logged and "anomaly.json" in artifacts
        if r.data.tags["genzoo.family"] == "gan":  # usefulness.families: does synthetic data help
            assert "usefulness.tstr.cnn" in logged and "usefulness.lift.p0.2.logistic.ci95" in logged
            assert "usefulness.lift.teacher.p0.2.cnn" in logged  # every recipe too
            assert "usefulness.json" in artifacts
    assert c.get_model_version("vae", "1").run_id == trained["vae"]["mlflow"]["run_id"]
    assert trained["vae"]["mlflow"]["model_uri"] == "models:/vae/1"
    metrics = json.loads((tmp_path / "runs" / "vae" / "metrics.json").read_text())
    assert metrics["mlflow"]["model_uri"] == "models:/vae/1"
    # a registered version samples through the command line, and its download leaves nothing behind
    out, scratch = tmp_path / "from_registry", tmp_path / "tmp"
    scratch.mkdir()
    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(tempfile, "tempdir", str(scratch))
        m.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
        code = cli.main(
            ["sample", "--params", pfile, "--model", "models:/vae/1", "--n", "6", "--out", str(out), "-q"]
        )
    assert code == 0 and not list(scratch.iterdir())
    assert "Downloading artifacts" not in capsys.readouterr().err  # -q: MLflow's bar too
    with monkeypatch.context() as m:  # nor without -q where stderr is no terminal (a log, CI, a pipe)
        m.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
        argv = ["sample", "--params", pfile, "--model", "models:/vae/1", "--n", "6", "--out", f"{out}-2"]
        assert cli.main(argv) == 0
    assert "Downloading artifacts" not in capsys.readouterr().err
    import genzoo  # a library call draws no MLflow bars amid its caller's output either

    with monkeypatch.context() as m:
        m.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
        assert genzoo.load_model("models:/vae/1").family == "vae"
        assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # the caller's environment as it was
    assert "Downloading artifacts" not in capsys.readouterr().err
    with np.load(f"{out}.npz") as z:
        assert z["images"].shape == (6, 1, 8, 8)
    # each family evaluated (a Ray task once it is trained), then the report over all of them
    assert sorted(first["evaluate"]) == ["gan", "pixelcnn", "vae"]
    assert all(e["fd"] > 0 and e["fd_ci95"] >= 0 for e in first["evaluate"].values())
    assert sorted(first["report"]["families"]) == ["gan", "pixelcnn", "vae"]
    assert sorted(first["usefulness"]) == ["gan"] and set(first["usefulness"]["gan"]["lift"]) == {
        "0.2",
        "1.0",
    }
    assert (tmp_path / "runs" / "evaluation" / "gan" / "subsets" / "p0.2-s0.safetensors").exists()
    assert "usefulness" in first["report"]
    assert (tmp_path / "runs" / "report" / "index.html").stat().st_size > 10_000
    # the run's timeline (Chrome trace): every Ray task on its worker, every stage on the driver
    trace = json.loads(Path(first["timeline"]).read_text())
    on_ray = {e["name"] for e in trace["traceEvents"] if e["pid"] == "ray"}
    on_driver = {e["name"] for e in trace["traceEvents"] if e["pid"] == "driver"}
    assert {"train-vae", "train-gan", "train-pixelcnn", "evaluator", "evaluate-gan", "detect-pixelcnn",
            "train-subsets-gan", "usefulness-gan", "usefulness-reference"} <= on_ray, on_ray  # fmt: skip
    assert {"prepare", "train-vae", "evaluate-gan", "augment-dataset", "report"} <= on_driver
    seconds = trace["otherData"]["end"] - trace["otherData"]["start"]
    assert all(e["ts"] >= 0 and e["ts"] + e["dur"] <= seconds * 1e6 + 1 for e in trace["traceEvents"])
    assert trace["otherData"]["cpus"] >= 1
    # the fan-out's Ray tasks were submitted in its order, whichever Prefect thread came first:
    # what needs no model, then the measured family's training (the longest chain), then the rest
    assert first["submitted"][:4] == ["evaluator", "train-subsets-gan", "usefulness-reference", "train-gan"]
    assert sorted(first["submitted"][4:]) == ["train-pixelcnn", "train-vae"]
    assert trace["otherData"]["submitted"] == first["submitted"]

    # nothing changed: nothing trains or is re-evaluated; the outputs are untouched
    watched = [
        tmp_path / "runs" / "vae" / "model.safetensors",
        tmp_path / "runs" / "evaluation" / "vae" / "quality.json",
        tmp_path / "runs" / "evaluation" / "gan" / "usefulness.json",
        tmp_path / "runs" / "evaluation" / "gan" / "subsets" / "p0.2-s0.safetensors",
    ]
    before = [p.stat().st_mtime_ns for p in watched]
    with messages("prefect.task_runs") as lines:  # (caplog's handler is gone after the first flow run)
        again = pl.pipeline(params_file=pfile)
    assert all(m["cached"] for m in again["trained"].values())
    assert [p.stat().st_mtime_ns for p in watched] == before
    # its report is in its own run; the first run's, and the families' runs, as they were
    assert "report/index.html" in {a.path for a in c.list_artifacts(again["mlflow_run_id"], "report")}
    assert all(
        "report" not in {a.path for a in c.list_artifacts(r.info.run_id)} for r in children
    ) and {a.path for a in c.list_artifacts(first["mlflow_run_id"], "report")} == {
        "report/index.html", "report/summary.json", "report/families.csv"}  # fmt: skip
    said = [m for m in lines if pl.REUSED in m]
    for line in ("evaluator: test accuracy", "gan: FD", "vae: FD", "pixelcnn: anomaly AUROC",
                 "usefulness reference, real data alone", "gan: trained on synthetic alone",
                 "gan: generators on 1 real subset: 0 trained"):  # fmt: skip
        assert any(line in x for x in said), (line, said)  # each stage says it computed nothing

    # a dataset its filters cannot fill fails the run, with the report of the rest written first
    report = tmp_path / "runs" / "report" / "index.html"
    raw["augment"].update(min_confidence=0.9999, max_draws=1)
    _write(tmp_path, raw)
    t_report = report.stat().st_mtime_ns
    with pytest.raises(ValueError, match="passed the filters"):
        pl.pipeline(params_file=pfile)
    assert report.stat().st_mtime_ns > t_report and [p.stat().st_mtime_ns for p in watched] == before
    del raw["augment"]["min_confidence"], raw["augment"]["max_draws"]

    # one family's params change: only that family re-trains
    raw["models"]["vae"]["train"]["steps"] = 14
    _write(tmp_path, raw)
    with messages("prefect.task_runs") as said:  # (caplog's handler is gone after the first flow run)
        third = pl.pipeline(params_file=pfile)
    fd = {f: [m for m in said if m.startswith(f"{f}: FD ")] for f in ("vae", "gan")}
    assert len(fd["vae"]) == 1 and pl.REUSED not in fd["vae"][0], fd  # evaluated again, over its old figures
    assert len(fd["gan"]) == 1 and pl.REUSED in fd["gan"][0], fd
    assert {f: m["cached"] for f, m in third["trained"].items()} == {
        "vae": False,
        "gan": True,
        "pixelcnn": True,
    }
    assert third["trained"]["vae"]["steps"] == 14

    # same path, other content: the prepared data changed, so every family re-trains
    raw["data"]["val_fraction"] = 0.15
    raw["usefulness"]["families"] = []  # (measured above: not again on the new data)
    _write(tmp_path, raw)
    capsys.readouterr()
    fourth = pl.pipeline(params_file=pfile, families=["gan"])
    assert fourth["trained"]["gan"]["cached"] is False
    # said on the driver, where the console and the run's log show it (the worker's line reached neither)
    replacing = f"gan: replacing {tmp_path / 'runs' / 'gan'}, trained on other data than "
    assert replacing in capsys.readouterr().err
    running = c.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'")
    assert running == []


def test_stages_after_training_slot_in_and_see_every_family(tmp_path, monkeypatch, local_ray, caplog):
    """...and the run's log, in the console and in the Prefect UI, says when each stage starts
    and ends and how far each family's training is (step, loss, speed, ETA) while it trains."""
    seen = {}

    @task(name="count-samples")
    def count_samples(params, trained):
        seen.update({f: Path(params.run.runs_dir, f, "samples.png").exists() for f in trained})
        seen["profile"] = params.profile  # what the report says the run was made with
        return len(trained)

    monkeypatch.setattr(pl, "AFTER_TRAINING", [count_samples])
    monkeypatch.setattr(pl, "PROGRESS_EVERY_S", 0.2)
    raw = tiny_params(tmp_path, steps=150, families=["gan", "vae"]) | {"profiles": {"quick": {}}}
    pfile = _write(tmp_path, raw)
    with caplog.at_level(logging.INFO):
        result = pl.pipeline(params_file=pfile, profile="quick")
    assert result["count-samples"] == 2 and seen == {"gan": True, "vae": True, "profile": "quick"}

    by_stage: dict[str, list[str]] = {}
    for r in caplog.records:
        if hasattr(r, "task_run_name") and not r.getMessage().startswith("Finished in state"):  # Prefect's
            by_stage.setdefault(r.task_run_name, []).append(r.getMessage())
    for name in ("prepare", "evaluator", "train-gan", "train-vae", "evaluate-gan", "evaluate-vae"):
        assert by_stage[name][0] == "started" and re.fullmatch(r"done in [\d.]+ s", by_stage[name][-1])
    loss = {"gan": "d_loss", "vae": "neg_elbo"}
    for fam in ("gan", "vae"):
        progress = [m for m in by_stage[f"train-{fam}"] if m.startswith(f"{fam}: step ")]
        assert progress, by_stage[f"train-{fam}"]
        for line in progress:
            assert re.fullmatch(
                rf"{fam}: step \d+/150 \(\d+%\), {loss[fam]} -?[\d.e+-]+, [\d.]+ steps/s, ETA \d+:\d\d", line
            ), line
    # the same lines reach the Prefect API, where the UI shows them
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    flow_run_id = next(r.flow_run_id for r in caplog.records if getattr(r, "flow_run_id", None))
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    messages = [log.message for log in logs]
    assert any(m.startswith("vae: step ") for m in messages) and "started" in messages, messages
    assert not any("HTTP Request" in m for m in messages)
    # the figures `genzoo run` prints, as a table in the run's Artifacts tab (the UI showed none)
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        (art,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    assert art.key == "pipeline-figures" and art.type == "markdown"
    assert art.data.startswith(
        "| family | steps | train s | FD ± 95% | precision | recall | class acc | bits/dim |"
    )
    assert re.search(
        r"^\| vae \| 150 \| [\d.]+ \| [\d.]+ ± [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+% \| ", art.data, re.M
    ), art.data
    assert "\npipeline: " in art.data  # (this run makes no report: its line is left out)
    import base64  # and each family's samples, to look at there (the browser cannot open runs/)

    for fam in ("gan", "vae"):
        png = base64.b64encode((tmp_path / "runs" / fam / "samples.png").read_bytes()).decode()
        assert f"![{fam}'s samples](data:image/png;base64,{png})" in art.data


def test_ray_tasks_run_the_function_given_with_mlflow_pointed_where_the_driver_is(tmp_path, local_ray):
    params = validate(tiny_params(tmp_path, families=["vae"]))
    ref = cluster.submit(
        params, "vae", "where", os.getenv, "MLFLOW_TRACKING_URI", tracking_uri="sqlite:///x.db"
    )
    assert ray.get(ref, timeout=120) == "sqlite:///x.db"
    assert ray.get(cluster.submit(params, "vae", "max", max, 3, 7), timeout=120) == 7


def test_progress_reaches_the_driver_and_a_lost_board_never_fails_a_training(local_ray):
    with cluster.progress_board() as board:
        report = cluster.ReportProgress(board, "vae")
        report.on_start({"start_step": 100, "steps": 400})
        time.sleep(0.2)
        report.on_log(150, {"neg_elbo": 41.25, "lr": 1e-3})
        report.on_log(150, {"val": 3.0})  # a validation-only log is no progress
        row = ray.get(board.read.remote("vae"), timeout=30)
        assert row["step"] == 150 and row["steps"] == 400 and row["loss_name"] == "neg_elbo"
        # 50 steps since the resume in ~0.2 s: 250 steps left take ~5x as long
        assert row["eta_s"] == pytest.approx(250 / row["steps_per_s"]) and 0.5 < row["eta_s"] < 5
        line = cluster.progress_line("vae", row)
        assert re.fullmatch(r"vae: step 150/400 \(38%\), neg_elbo 41\.25, [\d.]+ steps/s, ETA 0:0\d", line)
        assert ray.get(board.read.remote("gan"), timeout=30) is None
        report.on_end(SimpleNamespace(steps=400))  # minutes of scoring may follow: said
        row = ray.get(board.read.remote("vae"), timeout=30)
        assert cluster.progress_line("vae", row) == (
            "vae: trained (400 steps); measuring its test likelihood and sampling speed"
        )
        assert cluster.ReportProgress(board, "gan").scored == "sampling speed"  # no likelihood
    report.on_log(200, {"neg_elbo": 40.0})  # the board (the driver) is gone: training goes on


def test_transient_errors_are_retried_and_bugs_fail_once(tmp_path, monkeypatch, local_ray):
    pfile = _write(tmp_path, tiny_params(tmp_path, steps=3, families=["gan"]))
    real, calls = pl.prepare, []

    def flaky(params):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.EIO, "Input/output error", "prepared/train.npz")
        return real(params)

    monkeypatch.setattr(pl, "prepare", flaky)
    assert pl.pipeline(params_file=pfile)["trained"]["gan"]["steps"] == 3
    assert len(calls) == 2

    calls.clear()

    def buggy(params):
        calls.append(1)
        raise ValueError("a bug")

    monkeypatch.setattr(pl, "prepare", buggy)
    with pytest.raises(ValueError, match="a bug"):
        pl.pipeline(params_file=pfile)
    assert len(calls) == 1
    assert not pl.is_transient(OSError(errno.ENOSPC, "No space left on device"))
    assert not pl.is_transient(FileNotFoundError(errno.ENOENT, "gone"))
    assert pl.is_transient(ConnectionResetError()) and pl.is_transient(TimeoutError())


def test_an_io_error_inside_a_ray_task_is_transient_and_a_bug_there_is_not(tmp_path, local_ray):
    """The stages after the driver's own run on Ray, whose wrapper of a worker's OSError carries
    no errno: the worker's exception decides whether Prefect retries the stage."""
    params = validate(tiny_params(tmp_path, families=["vae"]))
    raising = {
        "import errno\nraise OSError(errno.EIO, 'Input/output error', 'train.npz')": True,
        "raise ValueError('a bug')": False,
        "import errno\nraise OSError(errno.ENOSPC, 'No space left on device')": False,
    }
    refs = {code: cluster.submit(params, "vae", "fails", exec, code) for code in raising}
    for code, transient in raising.items():
        with pytest.raises(ray.exceptions.RayTaskError) as e:
            ray.get(refs[code], timeout=120)
        assert isinstance(e.value, OSError | ValueError) and pl.is_transient(e.value) is transient, code


def test_bad_params_fail_before_any_compute(tmp_path):
    raw = tiny_params(tmp_path, families=["vae"])
    raw["models"]["vae"]["train"]["lr"] = -1
    with pytest.raises(ValueError, match="models.vae.train.lr"):
        pl.pipeline(params_file=_write(tmp_path, raw))
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "runs").exists()


def test_a_dataset_whose_card_was_edited_stops_the_flow_before_any_compute(tmp_path):
    """The flow (a deployment's run) checks the last stage's folder first, as `genzoo run` does:
    an edited card in data/augment/<name> failed the run at its last stage, after the training."""
    from genzoo.tasks.formats import write_dataset
    from genzoo.tasks.layout import NotGenzooOutput
    from tests.tasks.test_formats import content

    raw = tiny_params(tmp_path, families=["vae"])
    target = Path(raw["augment"]["out_dir"]) / raw["augment"]["name"]
    write_dataset(target, content(), formats=["npz"], info={"name": target.name})
    (target / "README.md").write_text((target / "README.md").read_text() + "licence: mine\n")
    with pytest.raises(NotGenzooOutput, match="README.md changed since genzoo wrote it"):
        pl.pipeline(params_file=_write(tmp_path, raw))
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "runs").exists()


def test_an_unreachable_tracking_server_fails_before_any_compute(tmp_path, monkeypatch):
    from tests.test_services import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw = tiny_params(tmp_path, steps=3, families=["gan"])
    raw["run"]["track"] = True
    with pytest.raises(ConnectionError, match=f"MLflow tracking server {uri} is unreachable"):
        pl.pipeline(params_file=_write(tmp_path, raw))
    assert not (tmp_path / "prepared").exists() and not (tmp_path / "runs").exists()


def test_a_cluster_that_cannot_hold_a_family_leaves_no_mlflow_run(tmp_path, monkeypatch):
    """The pipeline's MLflow run opens once the cluster is joined and found able to hold every
    family: a join refused, or a family no node can hold, left a FAILED run with nothing in it.
    (A family too big, not an address nothing answers at: a Ray this process already runs, as a
    test before may leave, is used whatever the address.)"""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw = tiny_params(tmp_path, steps=3, families=["gan"])
    raw["run"]["track"] = True
    raw["ray"] = {"resources": {"gan": {"num_cpus": 4096}}}
    with pytest.raises(ValueError, match="ray.resources.gan: no Ray node can hold num_cpus=4096"):
        pl.pipeline(params_file=_write(tmp_path, raw))
    c = tracking.client(uri)
    assert [r.info.run_name for e in c.search_experiments() for r in c.search_runs([e.experiment_id])] == []
    assert not (tmp_path / "runs" / "gan").exists()


def test_a_cluster_that_is_not_there_leaves_no_mlflow_run(tmp_path, monkeypatch):
    """Nothing answering at --ray-address: refused before the pipeline's MLflow run opens (it left
    an empty FAILED run). (As in a fresh process: a Ray this test process runs is not used.)"""
    import ray

    from genzoo.tasks.errors import Unreachable
    from tests.test_services import free_port

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # refused before ray.init: none started
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw = tiny_params(tmp_path, steps=3, families=["gan"])
    raw["run"]["track"] = True
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable, match=f"Ray cluster at {address}: nothing answers there"):
        pl.pipeline(params_file=_write(tmp_path, raw), ray_address=address)
    c = tracking.client(uri)
    assert [r.info.run_name for e in c.search_experiments() for r in c.search_runs([e.experiment_id])] == []


def test_a_second_pipeline_on_the_same_folder_gets_a_clear_error(tmp_path):
    pfile = _write(tmp_path, tiny_params(tmp_path, steps=3, families=["gan"]))
    busy = re.escape(
        f"{tmp_path / 'runs'}: another genzoo pipeline is running on this folder (pid {os.getpid()} "
    )
    with pl.exclusive(tmp_path / "runs"), pytest.raises(pl.PipelineBusy, match=busy):
        pl.pipeline(params_file=pfile)
    assert not (tmp_path / "prepared").exists()
    with pl.exclusive(tmp_path / "runs"):  # released on exit: the next run goes
        pass


def test_the_run_lock_is_held_across_processes_and_freed_when_its_holder_is_killed(tmp_path):
    runs = tmp_path / "runs"
    with lock_held(runs) as holder:
        busy = f"{runs}: another genzoo pipeline is running on this folder (pid {holder.pid} since "
        with pytest.raises(pl.PipelineBusy, match=re.escape(busy)), pl.exclusive(runs):
            pass
    with pl.exclusive(runs):
        assert (runs / ".pipeline.holder").read_text().startswith(f"pid {os.getpid()} since ")
    assert not (runs / ".pipeline.holder").exists()


def test_a_run_from_a_deployment_waits_for_a_busy_folder_and_says_so_as_it_waits(tmp_path, monkeypatch):
    """A second run clicked in the Prefect UI failed after ~15 s naming a pid: a run from a
    deployment now waits for the folder, saying who holds it, and goes once it is free; the
    holder file names the Prefect flow run that holds it."""
    from genzoo.tasks import layout

    monkeypatch.setattr(layout, "WAIT_SAY_S", 0.5)
    runs, said, held = tmp_path / "runs", [], []

    def queued():
        with pl.exclusive(runs, "Prefect flow run 'second' (2)", said.append):
            held.append((runs / ".pipeline.holder").read_text())

    with lock_held(runs) as holder:
        waiter = threading.Thread(target=queued)
        waiter.start()
        deadline = time.monotonic() + 30
        while len(said) < 2:  # said as the wait starts, and again WAIT_SAY_S later
            assert time.monotonic() < deadline, said
            time.sleep(0.1)
        assert waiter.is_alive() and not held
        assert all(w.startswith(f"pid {holder.pid} since ") for w in said), said
    waiter.join(10)
    assert not waiter.is_alive() and len(held) == 1
    assert re.fullmatch(rf"pid {os.getpid()} since [\d-]+ [\d:]+, Prefect flow run 'second' \(2\)", held[0])


def test_an_experiment_made_before_genzoo_set_its_kind_is_marked_model_training(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    old = c.create_experiment(tracking.EXPERIMENT)
    assert "mlflow.experimentKind" not in c.get_experiment(old).tags
    assert tracking.prepare_store(uri, root=tmp_path) == old
    assert c.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_killed_worker_is_rerun_by_ray_and_resumes_from_its_checkpoint(tmp_path, monkeypatch, local_ray):
    """SIGKILL the Ray worker mid-training: Ray re-runs the task, which resumes from the last
    checkpoint, and the family's MLflow run ends FINISHED (not left RUNNING)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw = tiny_params(tmp_path, steps=400, families=["vae"])
    raw["run"]["track"] = True
    params = absolute(validate(raw))
    prepare(params)
    c = tracking.client(uri)
    from genzoo.tasks.train import start_family_run

    run_id = start_family_run(c, params, "vae")
    ref = submit_training(params, "vae", run_id=run_id, tracking_uri=uri, tags={})
    _kill_worker(tmp_path / "ckpt" / "vae", "train-vae")
    metrics = ray.get(ref, timeout=300)
    assert metrics["steps"] == 400 and metrics["resumed_from"] and metrics["resumed_from"] >= 10
    assert c.get_run(run_id).info.status == "FINISHED"
    assert json.loads((tmp_path / "runs" / "vae" / "metrics.json").read_text())["resumed_from"] > 0


def _kill_worker(ckpt: Path, name: str) -> None:
    """SIGKILL the worker running the Ray task ``name`` on this test's own local Ray, once its
    first checkpoint is written: only processes this test process started are looked at
    (own_processes), never the machine's, where a user's genzoo training may run a task of
    the same name. The victim is found first, so the kill follows the checkpoint at once (a
    tiny training can finish in a second on a fast machine)."""
    deadline = time.time() + 120
    while not (pids := own_processes(f"ray::{name}")) and time.time() < deadline:
        time.sleep(0.05)
    assert pids, f"no Ray worker of this test's Ray running {name}"
    while not list(ckpt.glob("*/index.json")) and time.time() < deadline:
        time.sleep(0.01)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            raise AssertionError(
                f"the worker running {name} (pid {pid}) ended before it was killed"
            ) from None


def test_a_worker_killed_with_no_ray_retry_left_is_retried_by_prefect(tmp_path, monkeypatch, local_ray):
    """With Ray's own retries off, a SIGKILLed worker fails the Prefect task run, which is
    retried (a crash is transient) and resumes from the checkpoint; the dead attempt's MLflow
    run is closed FAILED by the driver, the retry's run ends FINISHED, none stays RUNNING."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw = tiny_params(tmp_path, steps=400, families=["vae"])
    raw["run"]["track"] = True
    raw["ray"] = {"max_retries": 0}
    pfile = _write(tmp_path, raw)
    result = {}

    def run():
        try:
            result.update(pl.pipeline(params_file=pfile))
        except Exception as e:  # shown by the assertion below
            result["error"] = repr(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    _kill_worker(tmp_path / "ckpt" / "vae", "train-vae")
    t.join(300)
    assert "trained" in result, result
    vae = result["trained"]["vae"]
    assert vae["steps"] == 400 and vae["resumed_from"] >= 10
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    runs = c.search_runs([exp], "tags.`genzoo.family` = 'vae'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]


def test_resources_no_node_can_hold_fail_before_any_compute(tmp_path, monkeypatch, local_ray):
    raw = tiny_params(tmp_path, steps=3, families=["vae", "gan"])
    raw["ray"] = {"resources": {"default": {"num_cpus": 1}, "vae": {"num_gpus": 0.5}}}
    with pytest.raises(ValueError, match=r"ray.resources.vae.*num_gpus=0.5"):
        pl.pipeline(params_file=_write(tmp_path, raw))
    assert not (tmp_path / "prepared").exists()


def test_a_family_over_its_memory_fails_alone_and_the_others_are_recorded(tmp_path, monkeypatch, local_ray):
    """Case 9: the VAE with a net too large (hidden 384: 2 GB of weights, gradients and Adam
    state) under ``ray.resources.vae.memory_mb: 300`` fails with a message naming it and the
    limit (a resident-memory guard in its own worker; Ray's `memory` only schedules); the GAN trains, is
    evaluated and registered in MLflow; the run fails at the end; nothing of the VAE is kept as
    a model: no model.json, its MLflow run FAILED, no registered version."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw = tiny_params(tmp_path, steps=6, families=["vae", "gan"])
    raw["run"]["track"] = True
    raw["models"]["vae"]["net"]["hidden"] = 384
    raw["ray"] = {"resources": {"vae": {"memory_mb": 300}}}
    oom = "^" + re.escape("vae: ran out of memory: the task may use ray.resources.vae.memory_mb=300 MB")
    with pytest.raises(cluster.OutOfMemory, match=oom):
        pl.pipeline(params_file=_write(tmp_path, raw))
    assert (tmp_path / "runs" / "gan" / "model.json").exists()
    assert (tmp_path / "runs" / "evaluation" / "gan" / "quality.json").exists()
    assert not (tmp_path / "runs" / "vae" / "model.json").exists()
    c = tracking.client(uri)
    runs = c.search_runs([c.get_experiment_by_name(tracking.EXPERIMENT).experiment_id])
    by_family = {r.data.tags.get("genzoo.family", r.info.run_name): r for r in runs}
    status = {f: r.info.status for f, r in by_family.items()}
    assert status["gan"] == "FINISHED" and status["vae"] == "FAILED", status
    gan = c.search_model_versions("name='gan'")
    assert gan and {v.run_id for v in gan} == {by_family["gan"].info.run_id}, gan
    assert c.search_model_versions("name='vae'") == []
    assert TINY["vae"]["hidden"] == 8  # the test's params are its own: later tests train the tiny VAE


def test_a_family_out_of_memory_at_its_evaluation_fails_alone(monkeypatch):
    """Evaluation and usefulness run under the family's memory_mb too: one that ran out there
    stopped the whole fan-out (the others' finished work neither recorded nor reported). It now
    fails alone, as at its training, and nothing of it is kept."""

    class Done:
        def __init__(self, value=None, error=None):
            self.value, self.error = value, error

        def result(self):
            if self.error:
                raise self.error
            return self.value

        def wait(self):
            self.waited = True

    monkeypatch.setattr(pl, "get_run_logger", lambda: logging.getLogger("genzoo.test"))
    failed: dict[str, str] = {}
    trained = pl.each_family({"vae": Done("v"), "gan": Done("g")}, failed)
    oom = cluster.OutOfMemory("vae: ran out of memory")
    evaluated = pl.each_family({"vae": Done(error=oom), "gan": Done("eg")}, failed)
    assert trained == {"vae": "v", "gan": "g"} and evaluated == {"gan": "eg"}
    assert failed == {"vae": "vae: ran out of memory"}
    # a failed family's later steps are waited for (a task still running would write after the
    # run) and not read; any other error is the run's
    later = Done(error=AssertionError("never read"))
    assert pl.each_family({"vae": later, "gan": Done("ug")}, failed) == {"gan": "ug"} and later.waited
    with pytest.raises(ValueError):
        pl.each_family({"gan": Done(error=ValueError("bad"))}, failed)


def test_a_family_named_twice_runs_once():
    """`genzoo run --families vae,vae` (or the UI's form, a family picked twice) trained the VAE
    twice at once into the same folder, the first future never awaited."""
    params = validate(tiny_params(Path("/tmp/unused"), steps=1, families=["vae", "gan"]))
    assert pl.chosen_families(params, "params.yaml", ["vae", "gan", "vae"]) == ["vae", "gan"]
