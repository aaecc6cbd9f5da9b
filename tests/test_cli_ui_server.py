"""`metaopt ui` starts a real MLflow UI server on 127.0.0.1 against the given store (stopped after)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui_server(tmp_path):
    port = _free_port()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).search_experiments()  # a store to serve: `metaopt ui` never creates one
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaopt.cli", "ui", "--port", str(port), "--tracking-uri", uri],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    yield proc, port
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_ui_server_answers_on_loopback(ui_server):
    proc, port = ui_server
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, proc.stdout.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                assert response.status == 200
                break
        except OSError:
            assert time.monotonic() < deadline, "MLflow UI did not come up in 90 s"
            time.sleep(0.5)
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    if listening:  # ss is not on every machine; where it is, the server must listen on loopback only
        assert all("127.0.0.1:" in line for line in listening.strip().splitlines()), listening
