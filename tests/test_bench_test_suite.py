"""bench/test_suite.py: the suite run as `make test` runs it, its time and its CPU by process kind."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_bench

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return load_bench("test_suite")


def test_the_command_is_make_tests_pytest_line(bench):
    cmd = bench.pytest_command(ROOT)
    assert cmd[0] == str(Path(sys.executable).parent / "pytest")
    assert "-n" in cmd and "--dist" in cmd and not any(a.startswith("--durations") for a in cmd)


@pytest.mark.parametrize(
    "comm, cmd, expected",
    [
        ("ray::train", "ray::train", "Ray workers"),
        ("python", "/v/bin/python -c import sys;exec(eval(sys.stdin.readline()))", "pytest and its workers"),
        ("python", "/v/bin/python -c import uvicorn\nfrom prefect.server.api.server import create_app",
         "Prefect servers"),
        ("python", "/v/bin/python -m genzoo.tasks.train gan --params /tmp/pytest-of-x/p.yaml", "DVC stages"),
        ("python", "/v/bin/python /v/bin/genzoo run -q", "genzoo commands"),
        ("raylet", "/v/site-packages/ray/core/src/ray/raylet/raylet --x", "Ray daemons"),
    ],
)  # fmt: skip
def test_processes_are_told_apart_by_kind(bench, comm, cmd, expected):
    assert bench.kind(comm, cmd).startswith(expected)


def test_a_run_reports_time_summary_and_cpu(bench):
    # one process (-n 0 after make test's -n), one quick test
    node = "tests/test_quality_metrics.py::test_inception_score_bounds"
    r = bench.run_suite(ROOT, dict(os.environ), ["-n", "0", node])
    assert r["rc"] == 0 and "passed" in r["summary"], r
    assert math.isfinite(r["pytest_s"]) and 0 < r["pytest_s"] <= r["wall_s"]
    assert r["busy"] > 0 and r["kinds"]["pytest and its workers (in-process tests)"] > 0


def test_another_revisions_tree_uses_this_venv_without_installing_into_it(bench, tmp_path):
    """Its tests run `make serve` and `make mlflow` in the exported tree: `make` must find the
    venv installed (the tree's files older than its stamp), or it would reinstall genzoo from the
    tree, a folder deleted after the bench."""
    tree = bench.revision("HEAD", tmp_path)
    os.utime(tree / "pyproject.toml")  # edited just now: newer than the venv's install stamp
    bench.share_venv(tree)
    assert (tree / ".venv").resolve() == Path(sys.executable).parent.parent.resolve()
    up_to_date = subprocess.run(["make", "-q", "install"], cwd=tree, capture_output=True)
    assert up_to_date.returncode == 0, up_to_date
    assert bench.pytest_command(tree)[0] == str(Path(sys.executable).parent / "pytest")


def test_each_suite_is_collected_once_untimed_before_the_first_timed_run(bench, monkeypatch):
    """An exported revision had no bytecode nor pytest's rewritten test modules: its first run
    compiled them all, this checkout's had them, and the ratio leaned toward this checkout."""
    calls = []
    monkeypatch.setattr(bench, "revision", lambda ref, where: where / "tree")
    monkeypatch.setattr(bench, "share_venv", lambda tree: None)
    monkeypatch.setattr(bench, "warm", lambda tree, env, extra: calls.append(("warm", tree.name)))
    ran = {"wall_s": 1.0, "pytest_s": 1.0, "busy": 1.0, "summary": "1 passed", "rc": 0, "kinds": {}}
    monkeypatch.setattr(bench, "run_suite", lambda tree, env, extra: calls.append(("run", tree.name)) or ran)
    monkeypatch.setattr(sys, "argv", ["test_suite.py", "--against", "HEAD", "--repeats", "2"])
    bench.main()
    assert calls[:2] == [("warm", "tree"), ("warm", ROOT.name)]
    assert [c for c in calls if c[0] == "run"] == [("run", "tree"), ("run", ROOT.name)] * 1 + [
        ("run", ROOT.name),
        ("run", "tree"),
    ]
