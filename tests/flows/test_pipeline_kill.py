"""Kill the whole pipeline (driver, Ray and all) mid-training: the re-run skips the family
that had finished, resumes the interrupted one from its checkpoint, and closes the MLflow
runs the dead pipeline left RUNNING."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from genzoo.tasks import tracking
from tests.conftest import descendants, tiny_params

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def test_rerun_after_killing_the_pipeline_skips_finished_and_resumes_interrupted(tmp_path):
    raw = tiny_params(tmp_path, steps=20, families=["gan", "vae"])
    # the vae still training when the gan is done (about 80 steps/s on one core, so several
    # seconds to spare); a checkpoint every 50 steps (each is written in full)
    raw["models"]["vae"]["train"].update(steps=800, checkpoint_every=50)
    raw["run"]["track"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:{os.environ['PATH']}"}
    cmd = [str(BIN / "genzoo"), "run", "-q", "--json", "--params", "params.yaml"]

    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gan_done = tmp_path / "runs" / "gan" / "metrics.json"
    deadline = time.monotonic() + 300
    while not (gan_done.exists() and list((tmp_path / "ckpt" / "vae").glob("*/index.json"))):
        assert proc.poll() is None, "the pipeline ended before it could be killed"
        assert time.monotonic() < deadline, "no finished gan / vae checkpoint in time"
        time.sleep(0.3)
    time.sleep(1)
    tree = descendants(proc.pid)  # Ray's daemons and agents start sessions of their own
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Prefect server and its local Ray
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "runs" / "vae" / "model.json").exists()
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    assert c.search_runs([exp], "attributes.status = 'RUNNING'")  # left behind by the kill

    rerun = [a for a in cmd if a != "-q"]  # its log too
    r = subprocess.run(rerun, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    fams = json.loads(r.stdout.strip().splitlines()[-1])["families"]
    assert fams["gan"]["cached"] is True and fams["vae"]["cached"] is False
    vae = json.loads((tmp_path / "runs" / "vae" / "metrics.json").read_text())
    assert vae["steps"] == 800 and vae["resumed_from"] >= 10
    # said before its progress lines start there (in the console and the Prefect UI)
    assert f"vae: resuming from its checkpoint at step {vae['resumed_from']}" in r.stderr, r.stderr[-3000:]
    assert c.search_runs([exp], "attributes.status = 'RUNNING'") == []
    killed = c.search_runs([exp], "attributes.status = 'KILLED'")
    assert {r.data.tags.get("mlflow.runName") for r in killed} >= {"pipeline", "vae"}


def test_ctrl_c_stops_a_run_of_several_families_at_once_in_one_line(tmp_path):
    """Ctrl-C, twice (SIGINT to the driver's process group, as a terminal sends it) while two
    families train: the run ends within seconds, the Ray tasks cancelled (they ran on, or the driver hung
    waiting on a Ray it had shut down), with one line and exit 130; no MLflow run is left RUNNING
    and no process of the run is left."""
    raw = tiny_params(tmp_path, steps=20, families=["gan", "vae"])
    for f in ("gan", "vae"):
        raw["models"][f]["train"].update(steps=5000, checkpoint_every=50)
    raw["run"]["track"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [str(BIN / "genzoo"), "run", "--params", "params.yaml"],
        cwd=tmp_path,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not all(list((tmp_path / "ckpt" / f).glob("*/index.json")) for f in ("gan", "vae")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint of both families in time"
        time.sleep(0.3)
    tree = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the driver and what shares its group
    t0 = time.monotonic()
    time.sleep(0.3)  # and a second Ctrl-C, as impatient people press it: the unwinding goes on
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            for pid in [proc.pid, *tree]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    took = time.monotonic() - t0
    assert proc.returncode == 130, out + err
    lines = [x for x in err.splitlines() if x.startswith("genzoo run:")]
    assert lines == [
        "genzoo run: interrupted; the families already trained and the others' last checkpoints are kept: "
        "the same command resumes from them"
    ], err
    assert "Traceback" not in err and "steps in" not in out + err, out + err  # no training ran on to its end
    assert took < 30, f"{took:.1f} s from Ctrl-C to exit"
    deadline = time.monotonic() + 20  # Ray's daemons go once the driver has shut it down
    while left := [p for p in tree if Path(f"/proc/{p}").exists() and "zombie" not in _state(p)]:
        if time.monotonic() > deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"processes of the run left: {left}")
        time.sleep(0.5)
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    assert c.search_runs([exp], "attributes.status = 'RUNNING'") == []
    killed = c.search_runs([exp], "attributes.status = 'KILLED'")  # as MLflow marks a run a user stopped
    assert {r.data.tags.get("mlflow.runName") for r in killed} == {"pipeline", "gan", "vae"}


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "gone zombie"
