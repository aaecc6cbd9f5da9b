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
