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


def test_tests_and_benchmarks_signal_only_processes_they_started(tmp_path):
    """No process search by name across the machine (pgrep/pkill/killall: `make test` once
    killed a user's own VAE worker); tests find their victims among their own descendants."""
    import os
    import re
    import signal
    import subprocess
    import time

    from tests.conftest import own_processes

    by_name = re.compile(r"\b(pgrep|pkill|killall)\b")
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py"), ROOT / "Makefile"]
    hits = [
        f"{f.relative_to(ROOT)}:{i}"
        for f in files
        if f != Path(__file__)
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if by_name.search(line)
    ]
    assert hits == []
    # a process of the same title that this test did not start (a user's worker, here one
    # whose parent has exited) is not found; this test's own child is
    title = f"ray::train-vae-{tmp_path.name}"
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)", title]
    spawn = '"$@" >/dev/null 2>&1 </dev/null & echo $!'  # sh exits: the sleeper is no child of ours
    outsider = int(subprocess.run(["sh", "-c", spawn, "sh", *sleeper], capture_output=True, text=True,
                                  timeout=30).stdout.strip())  # fmt: skip
    child = subprocess.Popen(sleeper)
    try:
        deadline = time.monotonic() + 10
        while child.pid not in own_processes(title) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert own_processes(title) == [child.pid]
        assert Path(f"/proc/{outsider}").exists()  # it was there to be (wrongly) found
    finally:
        child.kill()
        child.wait()
        os.kill(outsider, signal.SIGKILL)  # the outsider this test started, by its PID


def test_the_test_sessions_prefect_home_is_removed_when_it_ends(tmp_path):
    """Each test session's private PREFECT_HOME (its database, ~10 MB) goes when the session ends;
    a PREFECT_HOME the user set is theirs and stays."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}
    code = "import os, tests.conftest; print(os.environ['PREFECT_HOME'])"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "TMPDIR": str(tmp_path)},
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(str(tmp_path)) and not list(tmp_path.iterdir())
    own = tmp_path / "mine"
    own.mkdir()
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PREFECT_HOME": str(own)},
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0 and r.stdout.strip() == str(own) and own.is_dir(), r.stderr


def test_a_forked_child_exiting_leaves_the_sessions_prefect_home(tmp_path):
    import os

    from tests.conftest import _remove_own

    home = tmp_path / "home"
    home.mkdir()
    pid = os.fork()
    if pid == 0:  # the child runs the session's exit hook, as a forked worker exiting would
        _remove_own(str(home), os.getppid())
        os._exit(0)
    os.waitpid(pid, 0)
    assert home.is_dir()
    _remove_own(str(home), os.getpid())
    assert not home.exists()
