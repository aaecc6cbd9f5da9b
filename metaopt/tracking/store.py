"""Where MLflow records go: the embedded sqlite store by default, any tracking URI by flag."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db`` (absolute, so Ray workers agree)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path(DEFAULT_DB).resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def default_artifact_root(tracking_uri: str) -> str | None:
    """``./mlartifacts`` beside a local sqlite store; the server decides for remote stores."""
    if tracking_uri.startswith("sqlite:"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / DEFAULT_ARTIFACTS).resolve().as_uri()
    return None


def experiment_name(family: str) -> str:
    """One MLflow experiment per task family."""
    return f"metaopt-{family}"


def registered_model_name(family: str) -> str:
    """The registered model that holds a family's champions."""
    return f"metaopt-{family}"


def get_or_create_experiment(client, family: str) -> str:  # noqa: ANN001 - MlflowClient, imported lazily
    """The family's experiment id, created with the default artifact root if missing."""
    name = experiment_name(family)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=default_artifact_root(client.tracking_uri))
