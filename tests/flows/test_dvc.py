"""The two entry points agree: a Prefect run records its outputs in dvc.lock, `dvc repro` makes
byte-identical models from the same params, and the default remote pushes and pulls them."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from genzoo.tasks.layout import read_json
from tests.conftest import load_bench, lock_held, make_dvc_repo

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ["vae", "gan"]
pytestmark = pytest.mark.slow


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def repo(tmp_path):
    """A fresh git + DVC repository holding genzoo's code, tiny params and a remote in tmp."""
    repo, _, sh = make_dvc_repo(tmp_path, steps=8, families=FAMILIES)
    sh("dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    return repo, sh


def test_prefect_run_is_recorded_in_dvc_and_dvc_repro_makes_the_same_models(tmp_path):
    """The one full run of both entry points: `genzoo run` records every stage in dvc.lock;
    `dvc repro` then does nothing; from scratch it remakes the same bytes; the synthetic dataset
    it wrote goes through the remote and `dvc get`; and a change to one family's params makes
    only that family's stages stale. pixelcnn brings the detect stage."""
    families = ["pixelcnn", "gan"]  # (what the vae would add here, train@ and evaluate@, is theirs)
    repo, raw, sh = make_dvc_repo(tmp_path, steps=8, families=families, useful=True, detect=True)
    sh("dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    out = sh("genzoo", "run")  # the Prefect flow, Ray fan-out, then `dvc commit`
    said = next(line for line in out.splitlines() if "recorded in dvc.lock (`dvc status`: up to" in line)
    named = set(said.split("up to date): ", 1)[1].split(", "))  # the stages it recorded, each named
    assert named == set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]), said
    assert {"prepare", "train@gan", "detect@pixelcnn", "usefulness@gan", "augment"} <= named, said
    flow_models = {f: sha(repo / "runs" / f / "model.safetensors") for f in families}
    # the dataset's record names the project's files as a command in it would (the pipeline
    # hands its stages absolute paths): no path of this machine in a dataset made to be shared
    made = json.loads((repo / "data" / "augment" / "synthetic" / "manifest.json").read_text())
    assert made["data"]["prepared_dir"] == "data/prepared", made["data"]
    assert {f: i["model"] for f, i in made["families"].items()} == {
        f: f"runs/{f}/model.json" for f in made["families"]
    }
    assert all(
        not Path(m["file"]).is_absolute() for fig in made["measured"].values() for m in fig.values() if m
    )
    status = sh("dvc", "status")
    assert "up to date" in status.lower(), status
    again = sh("dvc", "repro").lower()
    assert "running stage" not in again and "up to date" in again, again

    metrics = sh("dvc", "metrics", "show")
    for fam in families:
        assert f"runs/{fam}/metrics.json" in metrics and f"runs/evaluation/{fam}/quality.json" in metrics
    assert "test_bpd" in metrics and "runs/report/summary.json" in metrics
    assert "runs/evaluation/pixelcnn/anomaly.json" in metrics  # the detect stage
    assert (repo / "data" / "augment" / "synthetic" / "manifest.json").exists()  # the augment stage
    sh("dvc", "plots", "show", "-o", "plots")
    html = (repo / "plots" / "index.html").read_text()
    assert "pixelcnn training loss" in html and "gan training loss" in html
    assert "Precision vs recall" in html and "sampling speed" in html
    assert "runs_report_families_csv" not in html  # the trade-offs' data, not a plot by row index

    # the other entry point from scratch: same params and code -> the same bytes (CPU)
    shutil.rmtree(repo / "runs")
    shutil.rmtree(repo / "checkpoints")
    out = sh("dvc", "repro", "--no-run-cache")
    for fam in families:
        assert f"train@{fam}" in out and (repo / "runs" / fam / "samples.png").exists()
        assert sha(repo / "runs" / fam / "model.safetensors") == flow_models[fam], fam
    assert "up to date" in sh("dvc", "repro").lower()
    assert "up to date" in sh("dvc", "status").lower()

    raw["models"]["gan"]["train"]["steps"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    status = sh("dvc", "status")
    assert "train@gan" in status and "train@pixelcnn" not in status and "detect@pixelcnn" not in status
    assert "prepare" not in status
    augment_round_trip(repo, sh, tmp_path)  # (last: it empties the cache, which `dvc status` reports)


def augment_round_trip(repo: Path, sh, tmp_path: Path) -> None:
    """The synthetic dataset `dvc repro` wrote: push -> wipe -> pull (same bytes, loads as a
    Dataset); and from a commit of the repository, `dvc get` brings it into another folder."""
    from genzoo.tasks.augment import load_dataset

    folder = repo / "data" / "augment" / "synthetic"
    manifest = yaml.safe_load((folder / "manifest.json").read_text())
    assert manifest["families"] and manifest["filters"]["reject_copies"] is True
    assert manifest["sha256"] == sha(folder / "images.npz")
    files = {p.relative_to(folder).as_posix(): sha(p) for p in folder.rglob("*") if p.is_file()}
    assert "README.md" in files and manifest["formats"] == ["npz", "imagefolder"]
    assert sum(f.startswith("images/") for f in files) == manifest["n"]  # the image folders
    sh("dvc", "push")
    shutil.rmtree(folder)
    shutil.rmtree(repo / ".dvc" / "cache")
    sh("dvc", "pull", "augment")
    assert {p.relative_to(folder).as_posix(): sha(p) for p in folder.rglob("*") if p.is_file()} == files
    ds = load_dataset(folder)
    x, y = ds[0]
    assert len(ds) == manifest["n"] and x.shape == (1, 8, 8) and 0 <= float(x.min()) <= float(x.max()) <= 1

    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", "genzoo run with a synthetic dataset")
    other = tmp_path / "elsewhere"
    sh("dvc", "get", str(repo), "data/augment/synthetic", "-o", str(other))
    assert {p.relative_to(other).as_posix(): sha(p) for p in other.rglob("*") if p.is_file()} == files
    assert len(load_dataset(other)) == manifest["n"]


def test_a_run_failing_at_its_dataset_leaves_the_stages_before_it_recorded(repo):
    """A run of params.yaml as is whose dataset cannot be made (its filters reject the draws)
    fails, and the stages it finished are recorded (as `dvc repro` keeps the stages before a
    failed one): a rerun does not retrain them to record them."""
    repo, sh = repo
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["augment"].update(min_confidence=0.9999, max_draws=1)  # a barely trained evaluator: none pass
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    failed = command(repo, "genzoo", "run", "-q", "--families", "gan")
    assert failed.returncode != 0 and "passed the filters" in failed.stdout + failed.stderr, failed
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {"prepare", "train@gan", "evaluator", "evaluate@gan", "report"} <= set(stages), list(stages)
    assert "augment" not in stages and "recorded in dvc.lock before augment-dataset failed" in (
        failed.stdout + failed.stderr
    )
    assert "(`dvc status`: up to date)" not in failed.stdout + failed.stderr  # named once, as it fails
    status = dvc(repo, "status", "prepare", "train@gan", "evaluator", "evaluate@gan", "report").stdout
    assert "up to date" in status.lower(), status


def test_only_a_run_of_params_yaml_as_is_is_recorded(repo, monkeypatch):
    """Overrides, a profile, another params file or other output folders: the outputs are not
    what `dvc repro` makes from params.yaml, so the run is not recorded (the pipeline's rule,
    checked where it lives; a recorded run end to end: the tests above)."""
    from genzoo.flows.pipeline import _dvc_matches, _refusals, _unrecorded_because
    from genzoo.tasks.config import load_params

    repo, _ = repo
    monkeypatch.chdir(repo)
    params = load_params("params.yaml")
    assert _dvc_matches(params, "params.yaml", [], None)
    assert not _dvc_matches(params, "params.yaml", ["models.gan.train.steps=5"], None)
    assert not _dvc_matches(params, "params.yaml", [], "quick")
    shutil.copy("params.yaml", "mine.yaml")
    assert not _dvc_matches(load_params("mine.yaml"), "mine.yaml", [], None)
    assert not _dvc_matches(load_params("params.yaml", ["run.runs_dir=elsewhere"]), "params.yaml", [], None)
    # the run says why (it said "this run's params differ from params.yaml as is" of each)
    because = _unrecorded_because(load_params("mine.yaml"), "mine.yaml", [], None)
    assert because == "this run reads mine.yaml, not ./params.yaml"
    assert "-o or --profile" in _unrecorded_because(params, "params.yaml", [], "quick")
    elsewhere = repo.parent / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a --params from another folder: no DVC project here
    because = _unrecorded_because(params, str(repo / "params.yaml"), [], None)
    assert because == f"{elsewhere} is no DVC project (no dvc.yaml or no .dvc/ here)"
    # DVC's refusals grouped by reason, those that depend on a refused stage as one
    missing = "Parameters 'run.device' are missing."
    refused = {"train@gan": f"{missing}\nmore", "evaluate@gan": "depends on train@gan",
               "report": "depends on evaluate@gan", "detect@gan": missing}  # fmt: skip
    assert _refusals(refused) == (
        "train@gan, detect@gan (Parameters 'run.device' are missing); "
        "evaluate@gan, report (depends on a stage not recorded)"
    )


def test_push_then_pull_restores_data_and_models(repo, tmp_path):
    """What another clone gets from the remote: every output of the stages, their metrics, logs
    and curves too (runs/ is not in git), so the pulled model is up to date for `genzoo status`
    and `dvc status`, and `dvc repro` does not train it again."""
    repo, sh = repo
    sh("dvc", "repro", "prepare", "train@gan")
    files = [p.relative_to(repo).as_posix() for p in (repo / "runs" / "gan").iterdir()]
    before = {p: sha(repo / p) for p in ["data/prepared/train.npz", *files]}
    assert {"runs/gan/model.safetensors", "runs/gan/metrics.json", "runs/gan/log.jsonl"} <= set(before)
    sh("dvc", "push")
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "runs")
    shutil.rmtree(repo / "data" / "prepared")
    sh("dvc", "pull", "prepare", "train@gan")
    assert {p: sha(repo / p) for p in before} == before
    assert "gan       up to date" in sh("genzoo", "status")
    status = sh("dvc", "status", "prepare", "train@gan")
    assert "up to date" in status.lower(), status


# the stages' code deps against their imports: tests/tasks/test_layout.py


def test_a_source_under_data_raw_rewritten_in_place_makes_prepare_stale(tmp_path):
    """An npz: source under data.raw_dir is a dependency of the prepare stage: rewritten in place
    (same name, params untouched), `dvc status` calls prepare stale and `dvc repro` prepares the
    new images; a source outside that folder is prepared with a warning that DVC will not see it."""
    repo, raw, sh = make_dvc_repo(tmp_path, steps=8, families=["gan"])

    def write(path: Path, seed: int) -> None:
        rng = np.random.default_rng(seed)
        np.savez(path, images=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8), labels=np.arange(60) % 2)

    write(repo / "data" / "raw" / "mine.npz", 0)
    raw["data"]["source"] = "npz:data/raw/mine.npz"
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    out = sh("dvc", "repro", "prepare")
    assert "outside data.raw_dir" not in out, out
    first = read_json(repo / "data" / "prepared" / "manifest.json")["splits"]["train"]["sha256"]
    write(repo / "data" / "raw" / "mine.npz", 1)  # the same path, other images
    status = sh("dvc", "status", "prepare")
    assert re.search(r"modified: +data/raw", status), status
    sh("dvc", "repro", "prepare")
    assert read_json(repo / "data" / "prepared" / "manifest.json")["splits"]["train"]["sha256"] != first
    # versioned with DVC as data/raw/README.md says: `dvc add`, then git takes the record, not the data
    # (the record was git-ignored with the data: `dvc add` refused, "bad DVC file name ... is git-ignored")
    sh("dvc", "add", "data/raw/mine.npz")
    sh("git", "add", "data/raw/mine.npz.dvc")
    tracked = sh("git", "status", "--porcelain", "--untracked-files=all", "data/raw")
    assert "A  data/raw/mine.npz.dvc" in tracked and "mine.npz\n" not in tracked + "\n", tracked
    # the record lies in the folder prepare depends on: prepared once more, the same data
    second = read_json(repo / "data" / "prepared" / "manifest.json")["splits"]["train"]["sha256"]
    sh("dvc", "repro", "prepare")
    assert read_json(repo / "data" / "prepared" / "manifest.json")["splits"]["train"]["sha256"] == second
    assert "up to date" in sh("dvc", "status", "prepare").lower()

    write(repo / "elsewhere.npz", 2)
    raw["data"]["source"] = "npz:elsewhere.npz"
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    out = sh("dvc", "repro", "prepare")
    assert "elsewhere.npz lies outside data.raw_dir (data/raw)" in out, out


def test_a_failed_dvc_record_is_reported_and_the_models_kept(repo, monkeypatch, capsys):
    """A run whose `dvc commit` fails says so and keeps its models; and a run to be recorded
    whose source lies outside data/raw says before any compute that `dvc repro` will not see
    that source change (as the DVC stage does)."""
    from sklearn.datasets import load_digits

    repo, sh = repo
    digits = load_digits()
    np.savez(repo / "elsewhere.npz", images=digits.images.astype(np.uint8), labels=digits.target, levels=17)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["data"]["source"] = "npz:elsewhere.npz"
    del raw["run"]["device"]  # train@ lists run.device: `dvc commit` refuses a params file without it
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    out = sh("genzoo", "run", "--families", "gan")
    assert "elsewhere.npz lies outside data.raw_dir (data/raw)" in out, out
    assert """params.yaml lacks run.device (default "auto"), which dvc.yaml's stages list""" in out  # first
    assert "not recorded in dvc.lock: train@gan (Parameters 'run.device' are missing" in out, out
    assert "`dvc commit --force train@gan evaluate@gan" in out, out  # (plain `dvc commit` asks, or fails)
    assert (repo / "runs" / "gan" / "model.safetensors").exists()
    # the stages DVC takes are recorded all the same (`dvc commit` stopped at the refused one), but
    # none that depends on it (evaluate@gan would pair the new model's figures with no model)
    lock = (repo / "dvc.lock").read_text()
    recorded = set(yaml.safe_load(lock)["stages"])
    assert {"prepare", "evaluator"} <= recorded and not {"train@gan", "evaluate@gan"} & recorded, recorded
    # written in one go (genzoo.flows.record), the record is what `dvc commit --force` writes:
    # bench/dvc_record.py times both on the recorded stages, and stops if either changes dvc.lock
    bench = load_bench("dvc_record")
    monkeypatch.setattr(sys, "argv", ["dvc_record.py", "--repo", str(repo), "--repeats", "1"])
    bench.main()
    out = capsys.readouterr().out
    assert f"{len(recorded)} stages" in out and "| dvc commit --force |" in out and "ratio" in out, out
    assert (repo / "dvc.lock").read_text() == lock


def command(repo: Path, *cmd: str) -> subprocess.CompletedProcess:
    """``cmd`` in ``repo`` with this venv first on PATH; the result, whatever its status."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return command(repo, "dvc", *args)


def test_dvc_repro_while_a_pipeline_holds_the_lock_fails_clearly_and_writes_nothing(repo):
    """Case 15: while a `genzoo run` holds runs/.pipeline.lock (here a process holding it the
    way the flow does), `dvc repro` stops at its first stage with the lock's message, naming the
    holder's pid; nothing is written and dvc.lock is not created. Once the holder is gone the
    same command goes through."""
    repo, sh = repo
    with lock_held(repo / "runs") as holder:
        r = dvc(repo, "repro", "prepare")
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert f"runs: another genzoo pipeline is running on this folder (pid {holder.pid} since" in out
        assert not (repo / "data" / "prepared").exists() and not (repo / "dvc.lock").exists()
        assert sorted(p.name for p in (repo / "runs").iterdir()) == [".pipeline.holder", ".pipeline.lock"]
    sh("dvc", "repro", "prepare")
    assert "prepare" in yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert (repo / "data" / "prepared" / "manifest.json").exists()


def test_an_unreachable_dvc_remote_fails_before_any_training(tmp_path, monkeypatch):
    """Case 17, the DVC half: a default remote on a drive that is not there (its folder and
    the folder above are missing) stops `genzoo run` before Prefect, Ray or any stage starts:
    one line naming the remote's URL, exit 2, nothing prepared or trained. Once the folder
    above exists (DVC makes the remote itself on the first push) the check passes, as it does
    for the shipped default under a home with no ~/.cache yet (a fresh machine)."""
    from genzoo.flows.pipeline import dvc_remote_preflight
    from genzoo.tasks.errors import Unreachable

    repo, _, sh = make_dvc_repo(tmp_path, steps=3, families=["gan"])
    url = tmp_path / "unmounted" / "remote"
    sh("dvc", "remote", "add", "-d", "usb", str(url))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = ["genzoo", "run", "-q"]
    r = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        f"genzoo run: error: DVC remote 'usb' {url} is unreachable ({url.parent} does not exist); "
        "fix it (dvc remote modify usb url ...) or run with --no-dvc"
    ]
    assert not (repo / "runs").exists() and not (repo / "data" / "prepared").exists()

    monkeypatch.chdir(repo)  # the flow runs the same check first thing
    with pytest.raises(Unreachable, match=f"DVC remote 'usb' {url} is unreachable"):
        dvc_remote_preflight()
    url.parent.mkdir()
    dvc_remote_preflight()
    # the shipped default, ~/.cache/genzoo/dvc-storage, on a machine with no ~/.cache yet
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    sh("dvc", "remote", "add", "-d", "-f", "local", "~/.cache/genzoo/dvc-storage")
    dvc_remote_preflight()
    # an object store whose DVC plugin is not installed (infra/dvc/remote-s3.config without dvc[s3]):
    # one line saying what to install, not DVC's ImportError from deep inside the run
    sh("dvc", "remote", "add", "-d", "storage", "s3://genzoo-dvc/store")
    with pytest.raises(Unreachable) as e:
        dvc_remote_preflight()
    assert str(e.value).startswith("DVC remote 'storage' s3://genzoo-dvc/store: ")
    assert "dvc-s3" in str(e.value)
    assert str(e.value).endswith("; pip install 'dvc[s3]' (its plugin) or run with --no-dvc"), e.value


def test_a_corrupted_object_in_the_remote_is_refused_on_pull(repo):
    """Case 18. genzoo's remotes set ``verify = true`` (.dvc/config, infra/dvc/). A remote
    object replaced by other content (a valid npz with other images): with verify, `dvc pull`
    checks the md5, drops the object and fails; the folder (train.npz) is not checked out. Without it
    (DVC's default) the pull succeeds with the wrong file; then genzoo's own content hash
    (manifest.json) refuses it before any training."""
    import json

    from genzoo.tasks.data import DataError, load_split

    for cfg in (ROOT / ".dvc" / "config", ROOT / "infra" / "dvc" / "remote-s3.config"):
        assert re.search(r"^\s*verify = true$", cfg.read_text(), re.M), cfg
    repo, sh = repo
    sh("dvc", "remote", "modify", "local", "verify", "true")
    sh("dvc", "repro", "prepare")
    sh("dvc", "push")
    prepared = repo / "data" / "prepared"
    listing = next((repo / ".dvc" / "cache" / "files" / "md5").glob("*/*.dir"))
    md5 = next(e["md5"] for e in json.loads(listing.read_text()) if e["relpath"] == "train.npz")
    obj = repo.parent / "remote" / "files" / "md5" / md5[:2] / md5[2:]
    with np.load(prepared / "train.npz") as z:
        images, labels = z["images"].copy(), z["labels"].copy()
    images[0] = images[0].max() - images[0]  # one image inverted: a valid npz, other content
    np.savez(obj.with_suffix(".npz"), images=images, labels=labels)
    obj.with_suffix(".npz").replace(obj)

    def wipe():
        shutil.rmtree(repo / ".dvc" / "cache")
        shutil.rmtree(prepared, ignore_errors=True)

    wipe()
    r = dvc(repo, "pull", "prepare")
    assert r.returncode != 0 and "data/prepared" in r.stderr, r.stdout + r.stderr
    assert not (prepared / "train.npz").exists()  # the corrupt object was not checked out

    wipe()
    sh("dvc", "remote", "modify", "local", "verify", "false")
    sh("dvc", "pull", "prepare")  # DVC's default trusts the remote
    with pytest.raises(DataError, match="train.npz: content hash does not match manifest.json"):
        load_split(prepared, "train")


def test_ctrl_c_during_dvc_repro_leaves_dvc_lock_alone_and_the_rerun_resumes(tmp_path):
    """Case 14: Ctrl+C (SIGINT to the process group of a `dvc repro` this test started) once
    train@gan has written a checkpoint. DVC stops; dvc.lock records prepare (finished) but not
    the interrupted train@gan, whose outputs were never written. The re-run does not redo
    prepare, resumes the GAN from its checkpoint, records it, and `dvc status` is clean."""
    repo, _, sh = make_dvc_repo(tmp_path, steps=200, families=["gan"])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    # Ctrl+C's default action, as in a terminal: a shell without job control (`make test &`,
    # a CI runner) starts its background commands with SIGINT ignored, which they inherit
    proc = subprocess.Popen(
        ["dvc", "repro", "train@gan"], cwd=repo, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        # a checkpoint counts once its index names it (the file lands first, the index after)
        while not any(read_json(i) for i in (repo / "checkpoints" / "gan").glob("*/index.json")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl+C in a terminal does: the whole group
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, out
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert "prepare" in lock and "train@gan" not in lock, out
    assert not (repo / "runs" / "gan" / "model.json").exists()  # nothing of the stage promoted
    prepared = lock["prepare"]

    again = sh("dvc", "repro", "train@gan")
    assert "Stage 'prepare' didn't change, skipping" in again, again
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert lock["prepare"] == prepared and "train@gan" in lock
    metrics = json.loads((repo / "runs" / "gan" / "metrics.json").read_text())
    assert metrics["steps"] == 200 and metrics["resumed_from"] >= 10
    # the steps before the checkpoint are in the log again (DVC removed it: from the checkpoint's copy)
    log = (repo / "runs" / "gan" / "log.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in log]
    assert min(steps) < metrics["resumed_from"] and len(steps) == len(set(steps)), steps
    assert "up to date" in sh("dvc", "status", "prepare", "train@gan").lower()


def test_a_params_file_lacking_a_key_dvc_yaml_lists_is_said_before_any_compute(tmp_path, monkeypatch):
    """A params.yaml without `usefulness.held_out` ran the whole pipeline on the default, then
    DVC refused to record it; the keys are named first, with the default genzoo takes."""
    from genzoo.flows.pipeline import dvc_params_missing, missing_key_warnings
    from genzoo.tasks.config import validate
    from tests.conftest import tiny_params

    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / "dvc.yaml", tmp_path / "dvc.yaml")
    shipped = yaml.safe_load((root / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shipped))
    monkeypatch.chdir(tmp_path)
    params = validate(tiny_params(tmp_path))
    assert dvc_params_missing(params) == []  # the shipped file holds every key
    del shipped["usefulness"]["held_out"], shipped["run"]["device"], shipped["data"]["raw_dir"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shipped))
    assert dvc_params_missing(params) == [
        'data.raw_dir (default "data/raw")',  # read by ${data.raw_dir}: DVC cannot read dvc.yaml without it
        'run.device (default "auto")',
        "usefulness.held_out (default false)",
    ]
    listed, itself = missing_key_warnings("params.yaml", dvc_params_missing(params))
    assert (
        listed.startswith(
            'params.yaml lacks run.device (default "auto"), usefulness.held_out (default false), '
            "which dvc.yaml's stages list"
        )
        and "not record the stages that list it" in listed
    )
    assert itself.startswith(
        'params.yaml lacks data.raw_dir (default "data/raw"), which dvc.yaml itself reads'
    )
    assert "will record nothing of this run" in itself
