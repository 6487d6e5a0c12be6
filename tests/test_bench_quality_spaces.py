"""bench/quality_spaces.py: the run it trains first lands where git does not look."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_run_it_trains_first_is_ignored_by_git():
    """`--profile quick` trained in bench-out/ at the repository's top, which git showed as a new
    folder to commit (its MLflow database, checkpoints and data)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import quality_spaces
    finally:
        sys.path.remove(str(ROOT / "bench"))
    out = quality_spaces.parser().get_default("out")
    for made in ("mlflow.db", "checkpoints/vae/x", "data/prepared/train.npz", "runs/vae/model.json"):
        ignored = subprocess.run(["git", "check-ignore", "-q", str(out / made)], cwd=ROOT)
        assert ignored.returncode == 0, out / made
