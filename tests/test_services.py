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
        # a second one on the port fails, saying so (mlflow's own server exits 0 after its error)
        again = subprocess.run(["make", "-s", "mlflow", f"MLFLOW_PORT={port}", f"MLFLOW_STORE={tmp_path}"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert again.returncode != 0 and f"port {port} on 127.0.0.1 is in use" in again.stderr, again.stderr

        from mlflow import MlflowClient

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
        proc.wait(timeout=30)
