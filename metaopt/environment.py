"""The environment variables metaopt sets for the libraries it drives, in one place.

Set when a command, a search or a trial starts using those libraries, never on import:
MLflow's telemetry and artifact progress bars off (a user's own value wins), and Ray's
workers told the same plus quiet warnings; a local Ray on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

MLFLOW_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
WORKER_ENV = {**MLFLOW_ENV, "PYTHONWARNINGS": "ignore::UserWarning,ignore::FutureWarning"}


VERBOSE = "METAOPT_VERBOSE"  # "1": Ray's, MLflow's and Optuna's own logs in the terminal (`metaopt -v`)


def verbose() -> bool:
    """Whether the user asked for third-party logs (``metaopt -v`` or ``METAOPT_VERBOSE=1``)."""
    return os.environ.get(VERBOSE) == "1"


def quiet_libraries() -> None:
    """Optuna's per-trial INFO lines and Ray's start-up notes stay out of the terminal unless ``verbose()``: metaopt
    prints its own line per trial."""
    if verbose():
        return
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def quiet_mlflow() -> None:
    """MLflow without telemetry or artifact progress bars, unless the user set those variables."""
    for name, value in MLFLOW_ENV.items():
        os.environ.setdefault(name, value)


# Ray's switch for a one-machine node (its default on macOS and Windows): the node's address is the loopback one, so
# every server of a local Ray (GCS, raylet, workers, agents) listens on 127.0.0.1 only. On Linux, by default, they
# listen on all interfaces (token authentication on).
RAY_LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def ray_on_loopback() -> Iterator[None]:
    """While a local Ray starts: its node on 127.0.0.1 (a user's own ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` wins)."""
    if RAY_LOCAL_ONLY in os.environ:
        yield
        return
    os.environ[RAY_LOCAL_ONLY] = "0"  # read by Ray's processes as they start, and by Ray's import
    constants = sys.modules.get("ray._private.ray_constants")
    before = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None:  # Ray imported earlier in this process read the variable then
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:  # a later ray.init(address=cluster) in this process resolves its own address again
        del os.environ[RAY_LOCAL_ONLY]
        if constants is not None:
            constants.ENABLE_RAY_CLUSTER = before
