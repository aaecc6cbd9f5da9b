"""Shared fixtures: tiny float64 problems, and one real Ray session for the tests that need it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.utils.cpp_extension

from metaopt.environment import quiet_mlflow

quiet_mlflow()
# MLflow's HTTP client retries a refused request with exponential back-off (factor 2 by default: waits of
# 2, 4, 8, 16, 32 s); the tests' clients wait 1, 2, 4, ... s, with more retries, so a test whose server comes
# back (the outage test) waits seconds, not half a minute, for the next try. Ray's workers get the same.
TEST_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "10"}
for _name, _value in TEST_CLIENT_ENV.items():
    os.environ.setdefault(_name, _value)
# The kernels build once a machine (15-30 s) into torch's cache: the folder torch picks by default (under
# XDG_CACHE_HOME, one per Python and accelerator), named here so that a test that points XDG_CACHE_HOME or HOME at
# its tmp_path (its datasets' cache) keeps finding that one build, which a benchmark or a search may have made.
_ACCELERATOR = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(
    torch.utils.cpp_extension.get_default_build_root(),
    f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}_{_ACCELERATOR}"))


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, made once: MLflow migrates a new store for seconds, a copy of this takes ms."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def _store_in_tmp_path(request, empty_store) -> None:
    """A test that uses ``tmp_path`` finds an empty MLflow store there as ``mlflow.db`` (a copy of ``empty_store``),
    unless it is marked ``no_store`` (what a first search does without one is tested there and in sub-folders)."""
    if "tmp_path" in request.fixturenames and request.node.get_closest_marker("no_store") is None:
        shutil.copyfile(empty_store, request.getfixturevalue("tmp_path") / "mlflow.db")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (2 CPUs); shut down by the fixture, never by ``ray stop``."""
    import ray

    from metaopt.environment import WORKER_ENV, ray_on_loopback

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray ignores TMPDIR; keep the socket path short
    with ray_on_loopback():  # as metaopt starts a local Ray
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _temp_dir=temp_dir,
            runtime_env={"env_vars": {**WORKER_ENV, **TEST_CLIENT_ENV}},
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


# -- the at-scale services: PostgreSQL and Redis on 127.0.0.1 ----------------------------------------------------
# A test that needs one skips with one line where none answers (a laptop); CI sets METAOPT_REQUIRE_SERVICES=1
# (`.ci/run`), and then a missing service fails the test instead.

POSTGRES = os.environ.get("METAOPT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("METAOPT_TEST_REDIS", "redis://127.0.0.1:6379")


def _unavailable(what: str, exc: BaseException) -> None:
    reason = f"{what} does not answer ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''})"
    if os.environ.get("METAOPT_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason}, and METAOPT_REQUIRE_SERVICES=1 (CI) needs it", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_databases():
    """``new()`` makes a fresh PostgreSQL database (dropped after the session) and returns its SQLAlchemy URL."""
    import secrets

    try:
        import psycopg

        admin = psycopg.connect(POSTGRES, connect_timeout=3, autocommit=True)
    except Exception as exc:  # noqa: BLE001 - no driver, no server: skip (or fail in CI) with the reason
        _unavailable(f"PostgreSQL at {POSTGRES}", exc)
    made: list[str] = []

    def new() -> str:
        name = f"metaopt_test_{os.getpid()}_{secrets.token_hex(3)}"
        admin.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return POSTGRES.rsplit("/", 1)[0] + f"/{name}"

    yield new
    for name in made:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()


@pytest.fixture
def postgres_url(postgres_databases) -> str:
    """A fresh PostgreSQL database for one test (an Optuna storage, an MLflow backend store)."""
    return postgres_databases()


@pytest.fixture(scope="session")
def redis_url():
    """A Redis database of its own for this session (number 13, emptied before and after)."""
    try:
        import redis

        url = f"{REDIS}/13"
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - skip (or fail in CI) with the reason
        _unavailable(f"Redis at {REDIS}", exc)
    client.flushdb()
    yield url
    client.flushdb()


# -- one recorded store and one UI server, shared by the tests that read them -----------------------------------


@dataclass(frozen=True)
class Recorded:
    """A finished tiny search in a sqlite store: finished and pruned trials, a champion, the job it ran."""

    summary: Any
    uri: str
    experiment_id: str
    job: Path


@pytest.fixture(scope="session")
def recorded_search(request, tmp_path_factory) -> Recorded:
    """One tiny in-process search of MAML and first-order MAML (a median pruner prunes some), recorded in sqlite.

    Read only: a test that writes to a store makes its own.
    """
    from metaopt.search import load_job
    from metaopt.search.executors import InProcessExecutor
    from metaopt.search.runner import run_search
    from metaopt.tracking import MlflowSearchTracker
    from tests.search.jobs import tiny_job, write_job

    tmp = tmp_path_factory.mktemp("recorded")
    shutil.copyfile(request.getfixturevalue("empty_store"), tmp / "mlflow.db")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    job = tiny_job(methods=["maml", "fomaml"], budget={**tiny_job()["budget"], "trials": 6, "meta_iterations": 40},
                   pruner={"type": "median", "n_startup_trials": 2})
    path = write_job(tmp, job)
    tracker = MlflowSearchTracker(uri)
    summary = run_search(load_job(path), executor=InProcessExecutor(), tracker=tracker, workdir=tmp / "work")
    return Recorded(summary, uri, tracker.experiment_id, path)


@contextlib.contextmanager
def metaopt_ui(uri: str):
    """`metaopt ui` serving the store at ``uri`` (a server process): its address, the links it printed, its process.

    It prints its links once the server answers; stopped with SIGTERM, it stops its server."""
    import re

    from tests.mlflow_server import free_port
    from tests.search.jobs import REPO

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "metaopt.cli", "ui", "--port", str(port), "--tracking-uri", uri],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    first = proc.stdout.readline()
    assert first.startswith("MLflow UI on "), f"metaopt ui did not come up: {first}{proc.stderr.read()[-2000:]}"
    links = []
    for _ in range(len(_keys(uri))):
        links += re.findall(r"http://\S+#/experiments/\S+", proc.stdout.readline())
    try:
        yield f"http://127.0.0.1:{port}", links, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _keys(uri: str) -> list[str]:
    from mlflow.tracking import MlflowClient

    return [e for e in MlflowClient(uri).search_experiments(filter_string="tags.`metaopt.key` != ''", max_results=20)]


@pytest.fixture(scope="session")
def ui_server_process(recorded_search):
    """`metaopt ui` serving the recorded store (``metaopt_ui``)."""
    with metaopt_ui(recorded_search.uri) as served:
        yield served
