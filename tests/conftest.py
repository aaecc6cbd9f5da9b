"""Shared fixtures: tiny float64 problems, and one real Ray session for the tests that need it."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (2 CPUs); shut down by the fixture, never by ``ray stop``."""
    import ray

    from metaopt.search.executors import WORKER_ENV

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray ignores TMPDIR; keep the socket path short
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp_dir,
        runtime_env={"env_vars": WORKER_ENV},
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
