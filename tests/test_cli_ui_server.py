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
