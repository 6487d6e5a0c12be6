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


def test_an_out_folder_of_an_earlier_run_is_refused_and_only_the_reports_families_are_read(tmp_path):
    """With the default --out kept between calls, a second `--profile quick` reused the first
    run's finished stages and printed their few seconds as the run's time, and families left from
    an earlier run of other settings were ranked beside this run's."""
    import json

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mlflow.db").write_text("")
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "quality_spaces.py"),
        "--profile",
        "quick",
        "--out",
        str(tmp_path / "out"),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "holds an earlier run" in r.stderr, r.stderr
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import quality_spaces
    finally:
        sys.path.remove(str(ROOT / "bench"))
    ev = tmp_path / "runs" / "evaluation"
    for name in ("evaluator", "vae", "gan"):
        (ev / name).mkdir(parents=True)
    (ev / "evaluator" / "reference.json").write_text("{}")
    (ev / "evaluator" / "metrics.json").write_text("{}")
    for f in ("vae", "gan"):
        (ev / f / "quality.json").write_text(json.dumps({"fd": 1.0}))
    assert set(quality_spaces.read(tmp_path / "runs")[0]) == {"vae", "gan"}
    (tmp_path / "runs" / "report").mkdir()
    (tmp_path / "runs" / "report" / "summary.json").write_text(json.dumps({"families": {"vae": {}}}))
    assert set(quality_spaces.read(tmp_path / "runs")[0]) == {"vae"}
