"""What the store's past searches teach a new one: the nearest keys of the same family and kind, and their best
configurations — what ``metaopt advise`` recommends and what ``warm_start`` tries first.

A warm start has two rounds within its limit (a quarter of the trials): first each method's best configuration
from the nearest source that has it (at most half the limit, the methods that scored best there first); once those are scored on the new key, more configurations of the one method
that scored best there — the sources' next-best settings of it, nearest source first at each rank. A source that
misleads costs the first round only; one that transfers is searched deeper where it transferred.

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
from metaopt.search.warm import WarmPlan
from metaopt.tracking.leaderboard import all_runs
from metaopt.tracking.store import KeyExperiment, key_experiments

KIND_TAG = "metaopt.kind"  # on a search's parent run: its family's task kind
PER_METHOD = 3  # a source key's best configurations of each method that a warm start may try


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
            keys: list[str] | None = None, per_method: int = PER_METHOD) -> list[Source]:
    """The store's keys of ``family`` whose tasks are of ``kind``, nearest first (only ``keys`` where given), each
    with the ``per_method`` best finished configurations of each of its methods (best first)."""
    found = []
    for experiment in key_experiments(client, family) if family else []:
        if experiment.legacy or (keys is not None and experiment.key not in keys):
            continue
        parent = last_search(client, experiment.experiment_id)
        if parent is None or parent.data.tags.get(KIND_TAG, kind) != kind:
            continue
        recorded = {k.removeprefix("family."): v for k, v in parent.data.params.items() if k.startswith("family.")}
        configs = best_configs(client, experiment, per_method)
        if configs:
            found.append(Source(experiment.key, distance(options, recorded), experiment.metric.label, configs))
    return sorted(found, key=lambda s: (s.distance, s.key))


def best_configs(client: MlflowClient, experiment: KeyExperiment, per_method: int) -> list[Config]:
    """The ``per_method`` best finished trials of each method of a key (every search of it; not its exact limit),
    best first, each as its configuration and validation score."""
    val, sign = f"val_{experiment.metric.name}", (-1 if experiment.metric.direction == "maximize" else 1)
    by_method: dict[str, list[Config]] = {}
    for run in all_runs(client, experiment.experiment_id,
                        "tags.`metaopt.role` = 'trial' AND tags.`metaopt.state` = 'complete'"):
        method, score = run.data.tags.get("metaopt.method"), run.data.metrics.get(val)
        if method is None or method == experiment.limit or score is None or not math.isfinite(score):
            continue
        hparams = {k: _value(v) for k, v in run.data.params.items() if k != "method"}
        by_method.setdefault(method, []).append(Config(method, hparams, score))
    best = [c for configs in by_method.values() for c in sorted(configs, key=lambda c: sign * c.val)[:per_method]]
    return sorted(best, key=lambda c: sign * c.val)


def warm_plan(found: list[Source], space: SearchSpace, limit: int) -> WarmPlan:
    """The warm start from ``found`` (nearest first) for a job's ``space``: only its methods (not one it fixes: a
    baseline is tried anyway), the hyperparameters it searches, values it could give; ``first`` one per method, at
    most half the ``limit`` (the second round always has room)."""
    ranked: list[tuple[int, int, dict[str, Any], str]] = []  # (rank in its method, source index, config, origin)
    for index, source in enumerate(found):
        ranks: dict[str, int] = {}
        for config in source.configs:
            if config.method not in space.methods or config.method in space.fixed_methods():
                continue
            params = {"method": config.method,
                      **{k: v for k, v in config.hparams.items() if k in space.spaces.get(config.method, {})}}
            if not space.could_give(params):
                continue
            rank = ranks[config.method] = ranks.get(config.method, 0) + 1
            ranked.append((rank, index, params, f"{source.key} ({config.method}{f' #{rank}' if rank > 1 else ''}, "
                                                f"distance {source.distance:.2g})"))
    first: list[tuple[dict[str, Any], str]] = []
    more: list[tuple[dict[str, Any], str]] = []
    seen: list[dict[str, Any]] = []
    for _, _, params, origin in sorted(ranked, key=lambda r: (r[0], r[1])):  # each rank, nearest source first
        if params in seen:
            continue
        seen.append(params)
        is_first = all(p["method"] != params["method"] for p, _ in first) and len(first) < (limit + 1) // 2
        (first if is_first else more).append((params, origin))
    return WarmPlan(first, more, limit)


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
