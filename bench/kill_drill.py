"""Kill drills for the trainer (reliability cases 1 and 3): real processes, real SIGKILL.

    python bench/kill_drill.py                               # 100 kills mid-write, 5 mid-training
    python bench/kill_drill.py --write-kills 20 --train-kills 2

Case 3: a child process writes ~8 MB checkpoints in a loop and is SIGKILLed at a random
moment, again and again. After every kill the newest checkpoint must load, verify its sha256
and hold exactly what was written for its step; a partial file must never be picked up.
Case 1: a real training run (VAE on digits) is SIGKILLed at random moments and restarted
each time; the final parameters are compared with an uninterrupted run, and the steps lost
(trained after the last checkpoint, recomputed after the resume) are counted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WRITER = """
import pathlib, sys, torch
from genzoo.models.trainer import Checkpoints
ck = Checkpoints(sys.argv[1], keep=2)
pathlib.Path(sys.argv[2]).touch()  # imports done: the drill's clock starts here
state = ck.load_latest()
step = state["step"] if state else 0
while True:
    step += 1
    ck.save(step, {"step": step, "payload": torch.full((2_000_000,), float(step))})
"""

TRAINER = """
import json, sys, torch
from genzoo.models import build, DataSpec
from genzoo.models.trainer import JsonlLogger, TrainConfig, fit
from sklearn.datasets import load_digits
torch.set_num_threads(1)
d = load_digits()
x = torch.tensor(d.images[:, None] / 16.0, dtype=torch.float32)
y = torch.tensor(d.target)
torch.manual_seed(0)
m = build("vae", DataSpec(1, 8, 8, 17, 10), {"hidden": 16, "latent_dim": 8})
cfg = TrainConfig(steps=int(sys.argv[2]), batch_size=64, checkpoint_every=25, log_every=1)
log = JsonlLogger(sys.argv[1] + "/log.jsonl")
model, result = fit(m, x, y, cfg, checkpoint_dir=sys.argv[1], progress=False, callbacks=[log])
torch.save(model.state_dict(), sys.argv[1] + "/final.pt")
with open(sys.argv[1] + "/result.json", "w") as f:
    json.dump({"resumed_from": result.resumed_from, "steps": result.steps}, f)
"""


def _run(code: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL)


def write_drill(kills: int, rng: random.Random) -> dict:
    """``kills`` SIGKILLs of a process writing checkpoints, in a temporary folder removed after."""
    with tempfile.TemporaryDirectory(prefix="genzoo-kill-write-") as tmp:  # removed whatever happens
        return _write_drill(kills, rng, Path(tmp) / "checkpoints")


def _write_drill(kills: int, rng: random.Random, root: Path) -> dict:
    from genzoo.models.trainer import Checkpoints

    root.mkdir()
    good = bad = empty = 0
    temp_left = 0
    last = 0
    started = root.parent / f"{root.name}.started"  # beside the folder: never taken for a checkpoint
    for _ in range(kills):
        started.unlink(missing_ok=True)
        p = _run(WRITER, str(root), str(started))
        deadline = time.monotonic() + 120
        while not started.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the interpreter's start-up, however long a loaded machine makes it
        time.sleep(rng.uniform(0.0, 1.5))  # then a random point in the write loop
        p.send_signal(signal.SIGKILL)
        p.wait()
        temp_left += len(list(root.glob(".*.tmp")))
        state = Checkpoints(root).load_latest()
        if state is None:
            empty += 1
            continue
        ok = state["step"] >= last and bool((state["payload"] == float(state["step"])).all())
        good += ok
        bad += not ok
        last = state["step"]
    return {
        "kills": kills,
        "loaded_and_verified": good,
        "wrong_or_partial": bad,
        "no_checkpoint_yet": empty,
        "stale_temp_files_removed_on_restart": temp_left,
        "last_step": last,
    }


def _logged_steps(folder: Path) -> int:
    log = folder / "log.jsonl"
    text = log.read_text() if log.exists() else ""
    lines = text.split("\n")[:-1]  # complete lines only: the writer may be mid-line
    return json.loads(lines[-1])["step"] if lines else 0


def train_drill(kills: int, steps: int, rng: random.Random) -> dict:
    """``kills`` SIGKILLs, each at a random step chosen ahead (read from the training log as
    it grows), so every kill lands mid-training, never in the start-up or after the end; then a
    last run to the end, compared with an uninterrupted one."""
    with tempfile.TemporaryDirectory(prefix="genzoo-kill-train-") as tmp:  # removed whatever happens
        straight, killed = Path(tmp) / "straight", Path(tmp) / "killed"
        straight.mkdir()
        killed.mkdir()
        return _train_drill(kills, steps, rng, straight, killed)


def _train_drill(kills: int, steps: int, rng: random.Random, straight: Path, killed: Path) -> dict:
    import torch

    assert _run(TRAINER, str(straight), str(steps)).wait() == 0
    lost, killed_at, finished_early = [], [], 0
    done = 0
    for i in range(kills):
        # past the previous kill (and its log's last line), leaving room for the later kills
        room = (steps - 5 - done) // (kills - i)
        target = rng.randint(done + 5, done + max(5, room))
        if i == kills - 1:  # the last kill after the first checkpoint (25): a real resume
            target = max(target, 30)
        p = _run(TRAINER, str(killed), str(steps))
        while p.poll() is None and _logged_steps(killed) < target:
            time.sleep(0.01)
        p.send_signal(signal.SIGKILL)
        p.wait()
        finished_early += (killed / "final.pt").exists()
        done = _logged_steps(killed)
        killed_at.append(done)
        index = json.loads((killed / "index.json").read_text()) if (killed / "index.json").exists() else []
        lost.append(done - (index[-1]["step"] if index else 0))
    last_checkpoint = json.loads((killed / "index.json").read_text())[-1]["step"]
    assert _run(TRAINER, str(killed), str(steps)).wait() == 0
    resumed_from = json.loads((killed / "result.json").read_text())["resumed_from"]
    a = torch.load(straight / "final.pt", weights_only=True)
    b = torch.load(killed / "final.pt", weights_only=True)
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    return {
        "kills": kills,
        "steps": steps,
        "killed_at_steps": killed_at,
        "finished_before_a_kill": finished_early,
        "lost_steps_per_kill": lost,
        "last_checkpoint_before_final_run": last_checkpoint,
        "final_run_resumed_from": resumed_from,
        "max_abs_param_diff_vs_uninterrupted": worst,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write-kills", type=int, default=100)
    ap.add_argument("--train-kills", type=int, default=5)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    print(json.dumps({"checkpoint_write_kills": write_drill(args.write_kills, rng)}))
    print(json.dumps({"training_kills": train_drill(args.train_kills, args.steps, rng)}))


if __name__ == "__main__":
    main()
