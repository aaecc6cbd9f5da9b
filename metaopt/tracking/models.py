"""Load a trained learner back from the MLflow store or from disk."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from metaopt.learners.base import MetaLearner
from metaopt.learners.checkpoint import load_checkpoint

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _checkpoint_in(directory: Path) -> Path:
    for candidate in ("artifacts/checkpoint.pt", "checkpoint.pt", *(p.as_posix() for p in directory.glob("**/*.pt"))):
        path = directory / candidate
        if path.is_file():
            return path
    raise FileNotFoundError(f"{directory}: no metaopt checkpoint (*.pt) inside")


def load_learner(uri: str, *, tracking_uri: str | None = None, device: str = "cpu") -> MetaLearner:
    """A learner from ``models:/name@alias``, ``models:/name/version``, ``models:/m-...`` (a logged model), a run id or a path."""
    return load_checkpoint(checkpoint_file(uri, tracking_uri=tracking_uri), device)


def checkpoint_file(uri: str, *, tracking_uri: str | None = None) -> Path:
    """The checkpoint file of the model at ``uri`` (as ``load_learner`` takes it), downloaded where it is a store's."""
    path = Path(uri)
    if path.exists():
        return path if path.is_file() else _checkpoint_in(path)
    if not _RUN_ID.match(uri) and not re.match(r"^[a-z][a-z0-9+.-]*:", uri):
        raise FileNotFoundError(f"{uri}: no such file, and not a models:/ or runs:/ URI or a run id")
    if ".." in re.split(r"[/\\]", unquote(uri.split(":", 1)[-1])):
        raise ValueError(f"{uri}: refused: '..' in a model URI would reach outside the artifact store")

    import mlflow

    from metaopt.preflight import Problem
    from metaopt.tracking.store import check_tracking_uri

    try:
        resolved = check_tracking_uri(tracking_uri, create=False)  # loading never creates a store
    except Problem as exc:
        raise FileNotFoundError(f"{uri}: {str(exc).split(': ', 1)[-1]}") from None
    mlflow.set_tracking_uri(resolved)
    if _RUN_ID.match(uri):
        # A trial's run: its logged model if it finished, else its last checkpoint (pruned trials).
        tags = mlflow.get_run(uri).data.tags
        uri = tags.get("metaopt.model_uri") or f"runs:/{uri}/checkpoint"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    return local if local.is_file() else _checkpoint_in(local)
