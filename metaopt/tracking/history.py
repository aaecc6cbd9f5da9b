"""What the store's past searches teach a new one: the nearest keys of the same family and kind, and their best
configurations — what ``metaopt advise`` recommends and what ``warm_start`` tries first.

Distance between two keys of one family (never across families or task kinds): the sum over the family's options
of ``|log2(a / b)|`` for two positive numbers (5 shots against 10: 1), ``|a - b| / (|a| + |b|)`` for other numbers,
and 1 for two different values of any other kind (a folder, a function class); 0 is the same key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mlflow.tracking import MlflowClient

from metaopt.search.space import SearchSpace
from metaopt.tracking.leaderboard import leaderboards
from metaopt.tracking.store import key_experiments

KIND_TAG = "metaopt.kind"  # on a search's parent run: its family's task kind


@dataclass(frozen=True)
class Config:
    """One configuration a source key's search found best for its method, and its validation score."""

    method: str
    hparams: dict[str, Any]
    val: float


@dataclass(frozen=True)
class Source:
    """A key of the store near the one asked about, and the best configuration of each of its methods."""

    key: str
    distance: float
    metric: str
    configs: list[Config] = field(default_factory=list)


def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """How far two option sets of one family are apart (see the module)."""
    total = 0.0
    for name in sorted(set(a) | set(b)):
        x, y = _number(a.get(name)), _number(b.get(name))
        if x is not None and y is not None:
            if x > 0 and y > 0:
                total += abs(math.log2(x / y))
            elif x != y:
                total += abs(x - y) / (abs(x) + abs(y))
        elif str(a.get(name)) != str(b.get(name)):
            total += 1.0
    return total


def sources(client: MlflowClient, family: str, kind: str, options: dict[str, Any],
            keys: list[str] | None = None) -> list[Source]:
    """The store's keys of ``family`` whose tasks are of ``kind``, nearest first (only ``keys`` where given), each
    with its methods' best configurations (best first)."""
    found = []
    for experiment in key_experiments(client, family) if family else []:
        if experiment.legacy or (keys is not None and experiment.key not in keys):
            continue
        parent = last_search(client, experiment.experiment_id)
        if parent is None or parent.data.tags.get(KIND_TAG, kind) != kind:
            continue
        recorded = {k.removeprefix("family."): v for k, v in parent.data.params.items() if k.startswith("family.")}
        (board,) = leaderboards(experiment.key, tracking_uri=client.tracking_uri)
        configs = [Config(row.method, {k: _value(v) for k, v in row.hparams.items() if k != "method"}, row.best_val)
                   for row in board.rows if row.best_val is not None and row.method != board.limit]
        if configs:
            found.append(Source(experiment.key, distance(options, recorded), board.metric.label, configs))
    return sorted(found, key=lambda s: (s.distance, s.key))


def warm_configs(found: list[Source], space: SearchSpace, limit: int) -> list[tuple[dict[str, Any], str]]:
    """Up to ``limit`` configurations to try first, nearest source first, one per method that has more than one
    configuration, each as the job's space can take it (its methods, the hyperparameters the space searches or
    fixes, values it could give), with where it came from."""
    chosen: list[tuple[dict[str, Any], str]] = []
    seen: set[str] = set(space.fixed_methods())  # one configuration each: tried once anyway (a baseline, enqueued)
    for source in found:
        for config in source.configs:
            if len(chosen) >= limit or config.method not in space.methods or config.method in seen:
                continue
            hparams = {k: v for k, v in config.hparams.items() if k in space.spaces.get(config.method, {})}
            try:
                space.enqueue_params({"method": config.method, **hparams})
            except ValueError:  # a value this job's space could never give
                continue
            chosen.append(({"method": config.method, **hparams}, f"{source.key} ({config.method}, distance "
                                                                  f"{source.distance:.2g})"))
            seen.add(config.method)
    return chosen


def last_search(client: MlflowClient, experiment_id: str) -> Any:
    """The most recent search run of an experiment (None without one)."""
    runs = client.search_runs([experiment_id], "tags.`metaopt.role` = 'search'", max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def _number(value: Any) -> float | None:
    """``value`` as a finite number (an option as a job or MLflow's text gives it); None for anything else."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _value(text: Any) -> Any:
    """A parameter as MLflow keeps it (text) back as the value a job would write."""
    if not isinstance(text, str):
        return text
    if text in ("True", "False", "true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
