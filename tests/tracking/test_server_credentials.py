"""A tracking server with basic authentication, as `docker/compose.yaml` runs it: credentials are checked before a
search starts, in one line (wanted, refused), and accepted ones let it through."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from metaopt.preflight import Problem
from metaopt.tracking.store import check_tracking_uri
from tests.mlflow_server import MlflowServer
from tests.search.jobs import REPO, tiny_job, write_job

PASSWORD = "a-long-test-password-1"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("auth"), args=("--app-name", "basic-auth"),
                          env={"MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD, "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32})
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("user, password, expected", [
    (None, None, "the server wants credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
    ("admin", "wrong", "the server refused the credentials (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"),
])
def test_missing_or_refused_credentials_are_one_line_before_anything_starts(auth_server, tmp_path, user, password,
                                                                            expected):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    if user:
        env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    done = subprocess.run([sys.executable, "-m", "metaopt.cli", "search", str(write_job(tmp_path, tiny_job())),
                           "--tracking-uri", auth_server.uri], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={**env, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: --tracking-uri {auth_server.uri}: {expected}"
    assert not (tmp_path / ".metaopt").exists()


def test_accepted_credentials_pass(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    assert check_tracking_uri(auth_server.uri, create=True) == auth_server.uri
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "nope")
    with pytest.raises(Problem, match="refused the credentials"):
        check_tracking_uri(auth_server.uri, create=True)
