"""The code passes ruff's rules (pyproject.toml), among them the ban on bare `models`, `tasks`,
`metrics` and `flows` imports: genzoo's packages are `genzoo.*` only."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean():
    r = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_bare_package_imports_are_refused(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from tasks.train import train_family\nimport models\n\nprint(train_family, models)\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--config",
            str(ROOT / "pyproject.toml"),
            str(bad),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and r.stdout.count("TID251") == 2, r.stdout
