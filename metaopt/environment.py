"""The environment variables metaopt sets for the libraries it drives, in one place.

Set when a command, a search or a trial starts using those libraries, never on import:
MLflow's telemetry and artifact progress bars off (a user's own value wins), and Ray's
workers told the same plus quiet warnings.
"""

from __future__ import annotations

import os

MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
WORKER_ENV = {**MLFLOW_ENV, "PYTHONWARNINGS": "ignore::UserWarning,ignore::FutureWarning"}


def quiet_mlflow() -> None:
    """MLflow without telemetry or artifact progress bars, unless the user set those variables."""
    for name, value in MLFLOW_ENV.items():
        os.environ.setdefault(name, value)
