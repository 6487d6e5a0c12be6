"""MLflow tracking against a real sqlite store: concurrent writers lose no metric rows. (A
pipeline's nested runs, per-step metrics, artifacts, registered models and sampling a registered
version: tests/flows/test_pipeline.py, on the flow's first run.)"""

import json
import multiprocessing as mp
from pathlib import Path

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
    # six fresh processes, as Ray workers are, forked from a server that imported genzoo (torch,
    # MLflow) once, not six times; each opens its own connection to the store after the fork
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["genzoo.tasks.tracking", "mlflow.store.tracking.sqlalchemy_store"])
    procs = [ctx.Process(target=_writer, args=(store, rid, 60)) for rid in run_ids]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * 6
    for rid in run_ids:
        assert len(c.get_metric_history(rid, "loss")) == 60
        assert len(c.get_metric_history(rid, "aux")) == 60


def test_a_family_whose_stage_died_before_its_mlflow_record_is_not_taken_for_done(
    store, tmp_path, monkeypatch
):
    """Cases 2 and 16: metrics.json, the mark of a finished train@<family>, is written after the
    model is registered. A stage that dies in between (here: the registration raising) leaves no
    metrics.json, so the next run trains the family again (from its last checkpoint) and records
    it, instead of taking it for done with no registered version."""
    import json

    from genzoo.tasks import tracking
    from genzoo.tasks.config import validate
    from genzoo.tasks.layout import up_to_date
    from genzoo.tasks.prepare import prepare
    from genzoo.tasks.train import train_family
    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, steps=6, families=["gan"])
    raw["run"]["track"] = True
    params = validate(raw)
    prepare(params)

    def dies(*args, **kwargs):
        raise SystemExit("killed while registering")

    with monkeypatch.context() as m:
        m.setattr(tracking, "finish_family", dies)
        with pytest.raises(SystemExit):
            train_family(params, "gan", progress=False)
    out = tmp_path / "runs" / "gan"
    assert (out / "model.json").exists() and not (out / "metrics.json").exists()
    assert up_to_date(params, "gan") is None
    metrics = train_family(params, "gan", progress=False)
    assert metrics["resumed_from"] == 6 and metrics["mlflow"]["model_uri"] == "models:/gan/1"
    assert up_to_date(params, "gan") == json.loads((out / "metrics.json").read_text()) == metrics
    artifacts = {a.path for a in tracking.client(store).list_artifacts(metrics["mlflow"]["run_id"])}
    assert "metrics.json" in artifacts


def test_a_resumed_training_logs_its_whole_curve_to_the_run_that_registers_it(store, tmp_path, caplog):
    """Stopped at step 10 (its checkpoint) and trained again: the second run, whose model is
    registered, holds the loss of steps 5 and 10 (from the family's log.jsonl) besides its own,
    once each, and says where it resumed; the stopped run keeps its own steps."""
    from genzoo.tasks import tracking
    from genzoo.tasks.config import validate
    from genzoo.tasks.prepare import prepare
    from genzoo.tasks.train import train_family
    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, steps=20, families=["gan"])
    raw["run"]["track"] = True
    params = validate(raw)
    prepare(params)
    assert not train_family(params, "gan", progress=False, stop_at=10)["complete"]
    metrics = train_family(params, "gan", progress=False)
    assert metrics["resumed_from"] == 10
    c = tracking.client(store)
    (stopped,) = [r for r in c.search_runs([c.get_experiment_by_name(tracking.EXPERIMENT).experiment_id])
                  if r.info.status == "KILLED"]  # fmt: skip
    run = metrics["mlflow"]["run_id"]
    names = set(c.get_run(stopped.info.run_id).data.metrics) - {"train_seconds"}  # logged at its end
    assert {"lr", "g_loss", "d_loss"} <= names
    for name in names:
        assert [m.step for m in c.get_metric_history(stopped.info.run_id, name)] == [5, 10]
        assert sorted(m.step for m in c.get_metric_history(run, name)) == [5, 10, 15, 20], name
    assert c.get_run(run).data.tags["genzoo.resumed_from_step"] == "10"
    assert [m.step for m in c.get_metric_history(run, "train_seconds")] == [20]  # once, at its end
    # a Ray task retried in the same run (its worker died) resumes from an earlier checkpoint:
    # no step logged twice, neither copied nor logged again as it trains
    logger = tracking.MlflowLogger(c, run, history=tmp_path / "runs" / "gan" / "log.jsonl")
    logger.on_start({"start_step": 10})
    logger.on_log(15, {"lr": 1.0, "g_loss": 1.0})
    for name in names:
        assert sorted(m.step for m in c.get_metric_history(run, name)) == [5, 10, 15, 20], name
    # the rows of log.jsonl are another training's (log.key: other params): not taken for this
    # one's; its checkpoint's copy of its own rows is (as after `dvc repro` removed log.jsonl)
    log = tmp_path / "runs" / "gan" / "log.jsonl"
    own = log.read_text()
    log.write_text('{"step": 5, "lr": 123.0}\n')
    (tmp_path / "runs" / "gan" / "log.key").write_text("another training")
    again = train_family(params, "gan", progress=False)
    assert again["resumed_from"] == 20 and log.read_text() == own
    lrs = [m.value for m in c.get_metric_history(again["mlflow"]["run_id"], "lr")]
    assert len(lrs) == 4 and 123.0 not in lrs
    log.unlink()  # removed (dvc repro does, before the stage): the same rows, from the checkpoint
    last = train_family(params, "gan", progress=False)
    assert last["resumed_from"] == 20 and log.read_text() == own
    # trained again on other data: said, with the MLflow run that keeps the model it replaces
    import json
    import logging

    from genzoo.tasks.train import say_if_replacing_other_data
    from tests.conftest import prepared_other_data

    other = prepared_other_data(params, tmp_path)
    # the version to load it by (it said models:/gan/N)
    keeps = f"MLflow keeps it (run {last['mlflow']['run_id']}; registered as {last['mlflow']['model_uri']})"
    with caplog.at_level(logging.WARNING, logger="genzoo.train"):
        say_if_replacing_other_data(other, "gan")  # the run its metrics.json records
    assert keeps in caplog.text
    caplog.clear()
    untracked = other.model_copy(update={"run": other.run.model_copy(update={"track": False})})
    with caplog.at_level(logging.WARNING, logger="genzoo.train"):  # not looked up: not said unregistered
        say_if_replacing_other_data(untracked, "gan")
    assert (
        f"(run {last['mlflow']['run_id']}; its registered versions: MLflow's registry, under gan)"
        in caplog.text
    )
    caplog.clear()
    # its metrics.json removed, as a training of the other data killed midway leaves it: the run
    # is found by the model's fingerprint ("no MLflow run is recorded", it said), not a later run
    # of the same model that did not finish
    (tmp_path / "runs" / "gan" / "metrics.json").unlink()
    fingerprint = json.loads((tmp_path / "runs" / "gan" / "model.json").read_text())["fingerprint"]
    tags = {"genzoo.family": "gan", "genzoo.fingerprint": fingerprint,
            "genzoo.runs_dir": str((tmp_path / "runs").resolve())}  # fmt: skip
    killed = tracking.start_run(c, tracking.prepare_store(store), "gan", tags=tags).info.run_id
    c.set_terminated(killed, "KILLED")
    with caplog.at_level(logging.WARNING, logger="genzoo.train"):
        train_family(other, "gan", progress=False)
    assert f"gan: replacing {tmp_path / 'runs' / 'gan'}, trained on other data" in caplog.text
    assert keeps in caplog.text and killed not in caplog.text


def test_a_resume_copies_more_steps_than_one_mlflow_batch_takes(store, tmp_path, caplog):
    """MLflow takes at most 1,000 metrics, params and tags together in one log_batch: 1,500 earlier
    points (and the resume's tag) land whole; a copy that fails leaves the training going."""
    import json

    from genzoo.tasks import tracking

    c = tracking.client(store)
    run = tracking.start_run(c, tracking.prepare_store(store), "gan").info.run_id
    history = tmp_path / "log.jsonl"
    history.write_text("".join(json.dumps({"step": s, **{f"m{k}": s * 0.1 for k in range(5)}}) + "\n"
                               for s in range(1, 301)))  # fmt: skip
    tracking.MlflowLogger(c, run, history=history).on_start({"start_step": 300})
    assert [len(c.get_metric_history(run, f"m{k}")) for k in range(5)] == [300] * 5
    assert c.get_run(run).data.tags["genzoo.resumed_from_step"] == "300"
    history.write_text("{not json\n")
    tracking.MlflowLogger(c, run, history=history).on_start({"start_step": 300})  # a warning, no raise
    assert f"MLflow run {run}: the steps before the checkpoint at 300 not copied" in caplog.text


def test_genzoo_train_marks_killed_the_runs_a_killed_training_left_running(store, tmp_path, capsys):
    """Case 16 outside `genzoo run`: a `genzoo train` (or `dvc repro`) stopped by SIGKILL cannot
    end its MLflow run; the next one on the same runs folder, holding its lock, marks such runs
    KILLED (those of another folder are left alone) and trains as usual."""
    import json

    import yaml

    from genzoo.flows import cli
    from genzoo.tasks import tracking
    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, steps=3, families=["gan"])
    raw["run"]["track"] = True
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    c = tracking.client(store)
    exp = tracking.prepare_store(store)
    runs = str((tmp_path / "runs").resolve())
    stale = tracking.start_run(c, exp, "gan", tags={"genzoo.runs_dir": runs}).info.run_id
    other = tracking.start_run(c, exp, "gan", tags={"genzoo.runs_dir": "/elsewhere/runs"}).info.run_id
    # another machine's (or container's) folder at the same path, logging to the same server
    twin = {"genzoo.runs_dir": runs, tracking.FOLDER_ID: "0123456789abcdef"}
    twin = tracking.start_run(c, exp, "gan", tags=twin).info.run_id
    # refused before any MLflow run: no prepared data; then classes to leave out the data lacks
    assert cli.main(["train", "--family", "gan", "--params", str(pfile), "-q"]) == 2
    assert cli.main(["prepare", "--params", str(pfile), "-q"]) == 0
    bad = ["-o", "models.gan.train.exclude_classes=[12]"]
    assert cli.main(["train", "--family", "gan", "--params", str(pfile), "-q", *bad]) == 2
    err = capsys.readouterr().err
    # the hint repeats the command's --params (and --profile, -o's): it prepared params.yaml's data
    assert f"manifest.json: not found or unreadable; run `genzoo prepare --params {pfile}` first" in err, err
    from genzoo.tasks.data import DataError, read_manifest

    with pytest.raises(DataError, match="run `genzoo prepare` first"):  # from Python: no command's flags
        read_manifest(tmp_path / "nowhere")
    assert "invalid params: models.gan.train.exclude_classes: [12]: distinct classes of the data's 10" in err
    # a damaged split too (it was found once the MLflow run had started, and left it FAILED)
    val = Path(raw["data"]["prepared_dir"]) / "val.npz"
    whole = val.read_bytes()
    val.write_bytes(whole[:-100])
    assert cli.main(["train", "--family", "gan", "--params", str(pfile), "-q"]) == 2
    assert "val.npz: unreadable" in capsys.readouterr().err
    val.write_bytes(whole)
    assert len(c.search_runs([exp])) == 3
    assert cli.main(["train", "--family", "gan", "--params", str(pfile), "-q"]) == 0
    assert c.get_run(stale).info.status == "KILLED" and c.get_run(other).info.status == "RUNNING"
    assert c.get_run(twin).info.status == "RUNNING"
    trained = json.loads((tmp_path / "runs" / "gan" / "metrics.json").read_text())["mlflow"]["run_id"]
    assert c.get_run(trained).info.status == "FINISHED"
    own = (tmp_path / "runs" / ".genzoo-id").read_text().strip()
    assert (
        tmp_path / "runs" / ".genzoo-id"
    ).stat().st_mode & 0o044 == 0o044  # others sharing the folder read it
    assert c.get_run(trained).data.tags[tracking.FOLDER_ID] == own != "0123456789abcdef"
    # again, nothing changed: up to date, not trained again (it resumed from its last checkpoint,
    # ran no step and registered a second, identical version)
    model = (tmp_path / "runs" / "gan" / "model.safetensors").stat().st_mtime_ns
    assert cli.main(["train", "--family", "gan", "--params", str(pfile), "-q"]) == 0
    assert [int(v.version) for v in c.search_model_versions("name='gan'")] == [1]
    assert (tmp_path / "runs" / "gan" / "model.safetensors").stat().st_mtime_ns == model


def test_the_pipeline_run_is_killed_when_a_user_stops_it_and_failed_when_it_raises(store, tmp_path):
    """A cancel in the Prefect UI reaches the flow as Prefect's TerminationSignal (the runner's
    SIGTERM), Ctrl-C as KeyboardInterrupt: MLflow marks the pipeline's run KILLED, as it does the
    families' runs; any other exception FAILED."""
    import signal

    from prefect.exceptions import TerminationSignal

    from genzoo.flows.pipeline import parent_run
    from genzoo.tasks import tracking
    from genzoo.tasks.config import validate
    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, steps=3, families=["gan"])
    raw["run"]["track"] = True
    params = validate(raw)
    c = tracking.client(store)
    status = {}
    for e in (TerminationSignal(signal.SIGTERM), KeyboardInterrupt(), ValueError("bad")):
        with pytest.raises(type(e)), parent_run(params, ["gan"]) as run_id:
            raise e
        status[type(e).__name__] = c.get_run(run_id).info.status
    with parent_run(params, ["gan"]) as run_id:
        pass
    status["none"] = c.get_run(run_id).info.status
    killed, failed = {"TerminationSignal": "KILLED", "KeyboardInterrupt": "KILLED"}, {"ValueError": "FAILED"}
    assert status == {**killed, **failed, "none": "FINISHED"}


def test_a_registered_model_is_named_by_version_latest_or_alias_and_a_wrong_name_lists_what_there_is(store):
    """``genzoo sample --model``: models:/<family>/<version>, /latest (the highest version) and
    @<alias> (MLflow's forms); one that does not exist names the versions and aliases there are."""
    from genzoo.tasks import tracking
    from genzoo.tasks.errors import ModelNotFound

    c = tracking.client(store)
    c.create_registered_model("vae")
    for _ in range(3):
        c.create_model_version("vae", source="mlflow-artifacts:/x")
    c.set_registered_model_alias("vae", "champion", "2")
    found = {
        uri: tracking.registered_version(c, uri).version
        for uri in ("models:/vae/1", "models:/vae/latest", "models:/vae@champion")
    }
    assert found == {"models:/vae/1": 1, "models:/vae/latest": 3, "models:/vae@champion": 2}
    for uri in ("models:/vae/7", "models:/vae@best", "models:/vae/newest"):
        with pytest.raises(ModelNotFound, match=rf"{uri}: .*\(versions of vae: 1, 2, 3; aliases: champion\)"):
            tracking.registered_version(c, uri)
    with pytest.raises(
        ModelNotFound, match=r"models:/vae@best: no alias 'best' of vae in "
    ):  # (not "version")
        tracking.registered_version(c, "models:/vae@best")
    c.create_registered_model("realnvp")
    c.create_model_version("realnvp", source="mlflow-artifacts:/x")
    with pytest.raises(
        ModelNotFound,
        match=r"models:/realnvp@best: no alias 'best' of realnvp .*\(versions of realnvp: 1; no aliases\)",
    ):
        tracking.registered_version(c, "models:/realnvp@best")
    with pytest.raises(
        ModelNotFound, match=r"models:/gan/latest: .*\(no versions of gan; registered models: realnvp, vae\)"
    ):
        tracking.registered_version(c, "models:/gan/latest")
    with pytest.raises(
        ModelNotFound, match=r"\(no versions of vea; registered models: realnvp, vae; did you mean vae\?\)"
    ):
        tracking.registered_version(c, "models:/vea/1")  # (a misspelt name: the names there are)
    c.create_registered_model("ddpm")  # no versions yet (made before its first): no hint to itself
    with pytest.raises(
        ModelNotFound, match=r"\(no versions of ddpm; registered models: ddpm, realnvp, vae\)"
    ):
        tracking.registered_version(c, "models:/ddpm/1")
    with pytest.raises(ValueError, match="expected models:/<family>/<version>"):
        tracking.registered_version(c, "models:/vae")


def test_runs_are_tagged_with_the_commit_and_whether_the_checkout_was_changed(tmp_path, monkeypatch):
    """A run's code: the commit, and ``genzoo.git_dirty`` when the checkout differs from it
    (a new family's file not yet committed, an edited params.yaml); no tags outside git."""
    import subprocess

    from genzoo.tasks.tracking import git_tags

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # (no repository above tmp)
    assert git_tags() == {}
    env = {
        "GIT_CONFIG_GLOBAL": "/dev/null",  # (a user's signing or hooks setup: not this test's)
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    (tmp_path / ".gitignore").write_text("runs/\n")
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "one"]):
        subprocess.run(["git", *cmd], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x").write_text("ignored")
    assert git_tags() == {"genzoo.git_commit": head, "genzoo.git_dirty": "false"}
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")  # what `genzoo run` writes itself
    assert git_tags()["genzoo.git_dirty"] == "false"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "new.py").write_text("")
    assert git_tags() == {"genzoo.git_commit": head, "genzoo.git_dirty": "true"}


def test_a_stage_logs_a_figure_again_only_when_it_changed(store, monkeypatch):
    """`genzoo judge results` (or an evaluation) run twice logged every figure twice to the family's
    run: each metric's history held the same value at the same step again. Unchanged figures are
    left as they are; a changed one (more ratings) is a new row."""
    from types import SimpleNamespace

    from genzoo.tasks import tracking

    c = tracking.client(store)
    run_id = tracking.start_run(c, tracking.prepare_store(store), "vae").info.run_id
    monkeypatch.setattr(tracking, "family_run_id", lambda params, family: run_id)
    params = SimpleNamespace(run=SimpleNamespace(track=True))
    figures = {"error": 0.25, "by_class": {"3": 0.5}, "n": 40}
    tracking.log_stage(params, "vae", figures, prefix="human.")
    tracking.log_stage(params, "vae", figures, prefix="human.")
    assert [m.value for m in c.get_metric_history(run_id, "human.error")] == [0.25]
    assert [m.value for m in c.get_metric_history(run_id, "human.by_class.3")] == [0.5]
    tracking.log_stage(params, "vae", {**figures, "error": 0.3, "n": 50}, prefix="human.")
    assert [m.value for m in c.get_metric_history(run_id, "human.error")] == [0.25, 0.3]
    assert [m.value for m in c.get_metric_history(run_id, "human.by_class.3")] == [0.5]
    assert c.get_run(run_id).data.metrics["human.n"] == 50
    odd = {"nan": float("nan"), "up": float("inf"), "down": float("-inf")}  # as a SQL store keeps them
    for _ in range(2):
        tracking.log_stage(params, "vae", odd, prefix="human.")
    assert [len(c.get_metric_history(run_id, f"human.{k}")) for k in odd] == [1, 1, 1]
    tracking.log_stage(params, "vae", {"up": float("-inf")}, prefix="human.")
    assert len(c.get_metric_history(run_id, "human.up")) == 2


def test_sigterm_on_genzoo_train_marks_its_run_killed_and_keeps_its_checkpoint(
    store, tmp_path, monkeypatch, capsys
):
    """`kill` (SIGTERM) on a `genzoo train` after its checkpoint at step 10: it stops as Ctrl+C
    does (it ended at once, its MLflow run left RUNNING): the run KILLED, the checkpoint kept, one
    line, exit 130, the handler put back; the same command resumes from the checkpoint."""
    import os
    import signal

    import yaml

    from genzoo.flows import cli
    from genzoo.models.trainer import Checkpoints
    from genzoo.tasks import tracking
    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, steps=20, families=["gan"])
    raw["run"]["track"] = True
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    assert cli.main(["prepare", "--params", str(pfile), "-q"]) == 0
    save = Checkpoints.save

    def save_then_sigterm(self, step, state, written=None):
        path = save(self, step, state, written)
        if step == 10:
            os.kill(os.getpid(), signal.SIGTERM)
        return path

    before = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as m:
        m.setattr(Checkpoints, "save", save_then_sigterm)
        assert cli.main(["train", "--family", "gan", "--params", str(pfile), "-q"]) == 130
    left = "; its last checkpoint (step 10) is kept: the same command resumes from it"
    assert capsys.readouterr().err.strip().endswith("genzoo train: interrupted" + left)
    assert signal.getsignal(signal.SIGTERM) is before
    c = tracking.client(store)
    (run,) = c.search_runs([c.get_experiment_by_name(tracking.EXPERIMENT).experiment_id])
    assert run.info.status == "KILLED"
    assert [p.name for p in (tmp_path / "ckpt" / "gan").rglob("step-*.pt")] == ["step-00000010.pt"]
    assert cli.main(["train", "--family", "gan", "--params", str(pfile), "-q"]) == 0
    metrics = json.loads((tmp_path / "runs" / "gan" / "metrics.json").read_text())
    assert metrics["resumed_from"] == 10 and metrics["steps"] == 20
    # Ctrl+C as the next command finds it up to date: no checkpoint to resume, nothing to redo
    argv = ["train", "--family", "gan", "--params", str(pfile), "-q"]
    assert cli.left_by(cli.parse(argv)) == "; gan is trained and up to date: the same command does nothing"


def test_search_filter_values_hold_quotes():
    """A runs folder with a quote in its path (/home/o'brien/runs) made MLflow's search filter
    invalid: the lookup of a replaced model's run failed and the warning said none kept it."""
    from mlflow.utils.search_utils import SearchUtils

    from genzoo.tasks.errors import GenzooError
    from genzoo.tasks.tracking import _quoted

    for value in ("/home/o'brien/runs", '/data/"x"/runs', "/plain/runs"):
        (clause,) = SearchUtils.parse_search_filter(f"tags.`genzoo.runs_dir` = {_quoted(value)}")
        assert clause["value"] == value
    with pytest.raises(GenzooError, match="cannot be searched for"):
        _quoted('/it\'s "q"/runs')


def test_a_sqlite_store_is_missing_as_sqlalchemy_reads_its_uri(tmp_path, monkeypatch):
    """`models:/...` where there is no MLflow store is said before MLflow makes an empty one; a
    store named with query parameters or a percent-encoded path is found, in-memory never missing."""
    from genzoo.tasks.tracking import _missing_sqlite

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my dir").mkdir()
    (tmp_path / "my dir" / "m.db").touch()
    (tmp_path / "mlflow.db").touch()
    assert not _missing_sqlite("sqlite:///mlflow.db?timeout=30")
    assert not _missing_sqlite(f"sqlite:///{tmp_path}/my%20dir/m.db")
    assert not _missing_sqlite("sqlite://") and not _missing_sqlite("sqlite:///:memory:")
    assert _missing_sqlite("sqlite:///other.db") and _missing_sqlite(f"sqlite:///{tmp_path}/nope/m.db")


def test_a_failure_after_training_closes_its_run_and_a_locked_close_is_retried(store, tmp_path, monkeypatch):
    """Only the training itself was inside the block that closes the run: an error while its
    artifacts were logged or its model registered left the run RUNNING; several families ending
    at once on sqlite met "database is locked" at the close, unretried."""
    from genzoo.tasks import tracking
    from genzoo.tasks.config import validate
    from genzoo.tasks.prepare import prepare
    from genzoo.tasks.train import train_family
    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, steps=4, families=["gan"])
    raw["run"]["track"] = True
    params = validate(raw)
    prepare(params)

    def broken(*args):
        raise RuntimeError("the artifact store is gone")

    with monkeypatch.context() as m:
        m.setattr(tracking, "finish_family", broken)
        with pytest.raises(RuntimeError, match="the artifact store is gone"):
            train_family(params, "gan", progress=False)
    c = tracking.client(store)
    (run,) = c.search_runs([c.get_experiment_by_name(tracking.EXPERIMENT).experiment_id])
    assert run.info.status == "FAILED"
    from mlflow import MlflowClient

    close, tries = MlflowClient.set_terminated, []

    def locked_once(self, run_id, status=None, *a, **kw):
        tries.append(status)
        if len(tries) == 1:
            raise Exception("(sqlite3.OperationalError) database is locked")
        return close(self, run_id, status, *a, **kw)

    monkeypatch.setattr(MlflowClient, "set_terminated", locked_once)
    metrics = train_family(params, "gan", progress=False)
    assert tries == ["FINISHED", "FINISHED"]
    assert c.get_run(metrics["mlflow"]["run_id"]).info.status == "FINISHED"


def test_a_model_tracked_in_another_store_logs_its_later_figures_nowhere_and_says_so(
    store, tmp_path, monkeypatch
):
    """A clone that got its models by `dvc pull`: their metrics.json name MLflow runs of the
    machine that trained them, and the report's artifact, logged to that run id in this clone's
    store, failed `genzoo run` and `genzoo report` ("Run ... not found"). Nothing is logged there,
    with a warning; in the store that holds the run, the figures are logged as before."""
    from genzoo.tasks import tracking
    from genzoo.tasks.config import validate
    from genzoo.tasks.layout import family_run_id
    from genzoo.tasks.prepare import prepare
    from genzoo.tasks.train import train_family
    from tests.conftest import logged, tiny_params

    raw = tiny_params(tmp_path, steps=4, families=["gan"])
    raw["run"]["track"] = True
    params = validate(raw)
    prepare(params)
    train_family(params, "gan", progress=False)
    run_id = family_run_id(params, "gan")
    page = tmp_path / "index.html"
    page.write_text("<html></html>")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'pulled.db'}")
    figures = {"numbers": {"fd": 1.5}, "prefix": "quality.", "artifact": page, "artifact_path": "report"}
    with logged("genzoo.tracking") as lines:
        tracking.log_stage(params, "gan", **figures)
    assert [m for m in lines if f"MLflow run {run_id} is not in this store" in m], lines
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # the store that holds it: logged as before
    tracking.log_stage(params, "gan", **figures)
    c = tracking.client(store)
    assert c.get_run(run_id).data.metrics["quality.fd"] == 1.5
    assert "report/index.html" in {a.path for a in c.list_artifacts(run_id, "report")}
    c.delete_run(run_id)  # deleted in the UI: it takes no figures (MLflow refused them, a traceback)
    with logged("genzoo.tracking") as lines:
        tracking.log_stage(params, "gan", **{**figures, "numbers": {"fd": 2.5}})
    assert [m for m in lines if f"MLflow run {run_id} is deleted" in m], lines
    assert c.get_run(run_id).data.metrics["quality.fd"] == 1.5
