"""`make mlflow`: a real MLflow server, on loopback only, that tracking clients can use."""

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_mlflow_serves_on_loopback_and_accepts_runs(tmp_path, monkeypatch, capsys):
    port = free_port()
    proc = subprocess.Popen(
        ["make", "-s", "mlflow", f"MLFLOW_PORT={port}", f"MLFLOW_STORE={tmp_path}"],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not become healthy"
            assert proc.poll() is None, "make mlflow exited"
            time.sleep(1)
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout.splitlines()
        local = [line.split()[3] for line in listening if line.split()[3].endswith(f":{port}")]
        assert local and all(addr.startswith("127.0.0.1:") for addr in local), local
        ps = ["ps", "-ww", "-o", "args=", "-s", str(proc.pid)]  # the commands of its session
        started = subprocess.run(ps, capture_output=True, text=True).stdout
        assert "--workers 2" in started, started  # MLFLOW_WORKERS: not mlflow's own 4 on a 2-core machine
        assert "mlflow.server.jobs" not in started and "huey" not in started, started  # no GenAI job runner
        # a second one on the port fails, saying so (mlflow's own server exits 0 after its error)
        again = subprocess.run(["make", "-s", "mlflow", f"MLFLOW_PORT={port}", f"MLFLOW_STORE={tmp_path}"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert again.returncode != 0 and f"port {port} on 127.0.0.1 is in use" in again.stderr, again.stderr

        from mlflow import MlflowClient

        from genzoo.tasks.tracking import preflight

        preflight(url)  # the server lists 127.0.0.1: one API call, answered
        c = MlflowClient(tracking_uri=url)
        exp = c.create_experiment("served")
        run = c.create_run(exp)
        c.log_metric(run.info.run_id, "loss", 0.5, step=1)
        assert c.get_metric_history(run.info.run_id, "loss")[0].value == 0.5
        assert (tmp_path / "mlflow.db").exists()
        # a run's end prints its link to stdout, with a server: not under genzoo's -q
        from genzoo.flows import cli

        for name in ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "MLFLOW_PRINT_MODEL_URLS_ON_CREATION"):
            monkeypatch.setenv(name, "")  # recorded, so put back as found after the test, then unset
            monkeypatch.delenv(name)
        capsys.readouterr()
        c.set_terminated(run.info.run_id)
        assert "View run" in capsys.readouterr().out
        cli.setup_logging(quiet=True)
        c.set_terminated(c.create_run(exp).info.run_id)
        assert "View run" not in capsys.readouterr().out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # its workers' shutdown on a busy host: not what this tests
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_a_server_that_refuses_the_host_name_fails_before_any_work(tmp_path):
    """MLflow 3 answers /health from any host but refuses API calls whose Host it does not list
    (--allowed-hosts): a tracking URI by a DNS name (http://mlflow:5000) passed the check and
    failed the run at its first MLflow call, after Ray started. The check makes one API call."""
    import sys

    from genzoo.tasks.errors import TrackingUnavailable
    from genzoo.tasks.tracking import preflight

    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(  # (one worker, no job runner: the preflight asks one question)
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}", "--allowed-hosts", "mlflow.internal", "--workers", "1"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "mlflow server did not start"
                time.sleep(1)
        with pytest.raises(TrackingUnavailable) as e:
            preflight(url)
        assert str(e.value).startswith(f"MLflow tracking server {url} refuses the host name '127.0.0.1' (")
        assert "start it with --allowed-hosts naming it" in str(e.value)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
