"""bench/gpu_check.sh, the GPU box's one short check, in its CPU dry run: every step runs and
prints its figures (the real run differs in device and sizes only)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_gpu_check_dry_run_prints_every_step_as_it_goes():
    r = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--dry-run", "--families", "vae", "gan"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    for line in (
        "device cpu (dry run)",
        "1. batch size that fills the GPU",
        "vae batch 8:",
        "peak not measured (no CUDA)",  # not "peak nan MB"
        "gan: best batch",
        "2. bf16 autocast and torch.compile",
        "vae: fp32",
        "3. all 2 families at once on one GPU",
        "one after another:",
        "s on Ray's GPU ids 0\n",  # not "['[0]']"
        "(target 3x)",
        "| vae | ",
        "done",
    ):
        assert line in out, f"{line!r} missing from:\n{out}"
    # each step is printed when measured: the lines come in order, with growing timestamps
    stamps = [float(s.split("]")[0].strip("[ s")) for s in out.splitlines() if s.startswith("[")]
    assert stamps == sorted(stamps) and len(stamps) >= 10


def test_gpu_check_without_a_gpu_says_so():
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a GPU box
    r = subprocess.run(["bash", "bench/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env=env)  # fmt: skip
    assert r.returncode != 0 and "no CUDA device here" in r.stderr and "--dry-run" in r.stderr
