"""`metaopt ui` starts a real MLflow UI server on 127.0.0.1 against the given store (stopped after)."""

from __future__ import annotations

import subprocess
import urllib.request


def test_ui_server_answers_on_loopback(ui_server_process):
    address, links, proc = ui_server_process
    port = int(address.rsplit(":", 1)[1])
    assert proc.poll() is None
    with urllib.request.urlopen(f"{address}/health", timeout=5) as response:
        assert response.status == 200
    assert links and all(link.startswith(f"http://127.0.0.1:{port}/#/experiments/") for link in links)
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
    if listening:  # ss is not on every machine; where it is, the server must listen on loopback only
        assert all("127.0.0.1:" in line for line in listening.strip().splitlines()), listening


def test_ui_on_a_taken_port_is_one_line_and_sigterm_leaves_no_server(recorded_search, tmp_path, monkeypatch, capsys):
    import os
    import signal
    import socket
    import sys
    import time

    from tests.mlflow_server import free_port
    from tests.search.jobs import REPO
    from tests.test_cli_edges import _main, _one_line_error

    port = free_port()
    first = subprocess.Popen([sys.executable, "-m", "metaopt.cli", "ui", "--port", str(port), "--tracking-uri",
                              recorded_search.uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert first.stdout.readline().startswith(f"MLflow UI on http://127.0.0.1:{port}/")  # once it answers
        second, seconds = _main(["ui", "--port", str(port), "--tracking-uri", recorded_search.uri], tmp_path,
                                monkeypatch, capsys)
        assert second.returncode == 1 and seconds < 10 and second.stdout == ""  # no links to a server it did not start
        assert _one_line_error(second).startswith(f"error: --port {port}: 127.0.0.1:{port} is taken (")
        first.send_signal(signal.SIGTERM)  # to `metaopt ui` alone, as a service manager stops it
        assert first.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        first.kill()
    deadline = time.monotonic() + 15
    while True:  # the server it started is gone: the port is free again
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of closed connections is no server
            try:
                probe.bind(("127.0.0.1", port))
                break
            except OSError:
                assert time.monotonic() < deadline, "the MLflow server outlived `metaopt ui`"
                time.sleep(0.3)
