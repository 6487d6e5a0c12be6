"""The kill drills of bench/kill_drill.py, smaller: SIGKILL mid-write and mid-training."""

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import kill_drill  # noqa: E402

pytestmark = pytest.mark.slow


def test_killed_checkpoint_writes_never_leave_a_bad_checkpoint():
    r = kill_drill.write_drill(6, random.Random(0))
    assert r["wrong_or_partial"] == 0
    assert r["loaded_and_verified"] + r["no_checkpoint_yet"] == 6 and r["loaded_and_verified"] >= 3


def test_killed_training_resumes_to_the_same_parameters():
    r = kill_drill.train_drill(1, 150, random.Random(0))
    assert r["max_abs_param_diff_vs_uninterrupted"] == 0.0
    # at most one checkpoint interval (25 steps) is recomputed, whatever moment the kill hit
    assert all(0 <= lost <= 25 for lost in r["lost_steps_per_kill"])
