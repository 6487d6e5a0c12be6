"""The kill drills of bench/kill_drill.py, smaller: SIGKILL mid-write and mid-training."""

import random
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import kill_drill  # noqa: E402

pytestmark = pytest.mark.slow


def test_killed_checkpoint_writes_never_leave_a_bad_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = kill_drill.write_drill(6, random.Random(0))
    assert not list(tmp_path.iterdir())  # its ~8 MB checkpoints removed
    assert r["wrong_or_partial"] == 0
    assert r["loaded_and_verified"] + r["no_checkpoint_yet"] == 6 and r["loaded_and_verified"] >= 3


def test_killed_training_resumes_to_the_same_parameters(tmp_path, monkeypatch):
    """Case 1: two SIGKILLs, each at a random step while the VAE trains; each landed
    mid-training (the log had started, the run had not finished), the last run resumed from
    the last checkpoint, and the final parameters equal an uninterrupted run's exactly."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    r = kill_drill.train_drill(2, 150, random.Random(0))
    assert not list(tmp_path.iterdir())
    assert r["finished_before_a_kill"] == 0
    assert all(0 < at < 150 for at in r["killed_at_steps"]), r
    assert r["killed_at_steps"] == sorted(r["killed_at_steps"])
    assert r["final_run_resumed_from"] == r["last_checkpoint_before_final_run"] >= 25, r
    assert r["max_abs_param_diff_vs_uninterrupted"] == 0.0
    # at most one checkpoint interval (25 steps) is recomputed, whatever moment the kill hit
    assert all(0 <= lost <= 25 for lost in r["lost_steps_per_kill"])
