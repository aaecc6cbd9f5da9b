"""A real MLflow tracking server on 127.0.0.1 that a test starts, stops and restarts by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on at the moment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on a sqlite store (or ``backend``, a database URL) and an artifact folder under ``root``.

    One web worker, no job runner; artifacts proxied (``--artifacts-destination``), as ``docker/compose.yaml`` runs it.
    """

    def __init__(self, root: Path, backend: str | None = None, *, args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.root, self.port = root, free_port()
        self.backend = backend or f"sqlite:///{root / 'mlflow.db'}"
        self.args, self.env = args, env or {}
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> None:
        """Start the server and wait until ``/health`` answers."""
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
               **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", self.backend,
             "--artifacts-destination", (self.root / "artifacts").as_uri(), *self.args],
            env=env, cwd=self.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow server did not answer in {timeout} s") from None
                time.sleep(0.3)

    def stop(self) -> None:
        """Kill the server's process group (its web workers too) and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
