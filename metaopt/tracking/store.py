"""Where MLflow records go (the embedded sqlite store by default), and how they are named: one experiment per key.

A key is a family and the options that change its tasks (``sine-10shot``,
``glyphs-5w1s-q5``). Its experiment and its registered model are both
``metaopt-<key>``; the experiment's tags say which family and primary metric it holds.
Stores written before keys have one experiment per family (``metaopt-<family>``, no
``metaopt.key`` tag): they stay readable as a *legacy* key named like the family.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaopt.tasks import FAMILIES
from metaopt.tasks.metrics import Metric, mse

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
PREFIX = "metaopt-"


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


def experiment_name(key: str) -> str:
    """One MLflow experiment per key."""
    return f"{PREFIX}{key}"


def registered_model_name(key: str) -> str:
    """The registered model that holds a key's champions."""
    return f"{PREFIX}{key}"


def get_or_create_experiment(client: Any, key: str, family: str | None = None, metric: Metric | None = None) -> str:
    """The key's experiment id, created (with the default artifact root and its family's tags) if missing."""
    name = experiment_name(key)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    tags = {"metaopt.key": key}
    if family is not None:
        tags["metaopt.family"] = family
    if metric is not None:
        tags.update({"metaopt.metric": metric.name, "metaopt.direction": metric.direction})
    return client.create_experiment(name, artifact_location=default_artifact_root(client.tracking_uri), tags=tags)


@dataclass(frozen=True)
class KeyExperiment:
    """A key's experiment: which family, its metrics (primary first), and whether it is a legacy per-family one."""

    key: str
    family: str
    experiment_id: str
    metrics: tuple[Metric, ...]
    legacy: bool = False

    @property
    def metric(self) -> Metric:
        """The primary metric: what validation ranks by."""
        return self.metrics[0]


def key_experiments(client: Any, name: str) -> list[KeyExperiment]:
    """The experiments ``name`` stands for: one key, or every key of a family (and its legacy experiment)."""
    found: list[KeyExperiment] = []
    if name in FAMILIES:
        query = f"tags.`metaopt.family` = '{name}'"
        for experiment in client.search_experiments(filter_string=query):
            if "metaopt.key" in experiment.tags:
                found.append(_described(experiment))
        legacy = client.get_experiment_by_name(experiment_name(name))
        if legacy is not None and "metaopt.key" not in legacy.tags:
            found.append(KeyExperiment(name, name, legacy.experiment_id, legacy_metrics(name), legacy=True))
        return sorted(found, key=lambda e: (e.legacy, e.key))
    experiment = client.get_experiment_by_name(experiment_name(name))
    if experiment is not None and "metaopt.key" in experiment.tags:
        found.append(_described(experiment))
    return found


def legacy_metrics(family: str) -> tuple[Metric, ...]:
    """What a legacy experiment recorded: ranked by validation loss (lower is better), the family's others beside."""
    others = tuple(m for m in FAMILIES[family].metrics if m.name != "loss") if family in FAMILIES else ()
    return (Metric("loss", "minimize", "loss", mse), *others)


def _described(experiment: Any) -> KeyExperiment:
    """A key's experiment with its family's metrics (from its tags where the family is not installed)."""
    tags = experiment.tags
    family = tags.get("metaopt.family", "")
    if family in FAMILIES:
        metrics = FAMILIES[family].metrics
    else:
        name, direction = tags.get("metaopt.metric", "loss"), tags.get("metaopt.direction", "minimize")
        metrics = (Metric(name, direction, name, mse),)
    return KeyExperiment(tags["metaopt.key"], family, experiment.experiment_id, metrics)
