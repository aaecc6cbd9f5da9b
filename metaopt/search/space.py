"""Conditional search spaces: the method is a categorical choice and each method's hyperparameters hang off it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import optuna

from metaopt.learners import LEARNERS
from metaopt.learners.base import HParam
from metaopt.search.ranges import Categorical, FloatRange, IntRange, MethodSpace
from metaopt.tasks.base import TaskKind
from metaopt.text import short

METHOD_PARAM = "method"


class SearchSpace:
    """Per-method hyperparameter ranges, validated against what each learner accepts."""

    def __init__(self, methods: list[str], spaces: Mapping[str, MethodSpace], task_kind: TaskKind | None = None) -> None:
        self.methods = list(methods)
        self.spaces = {method: dict(spaces.get(method, {})) for method in self.methods}
        self.task_kind = task_kind  # the family's: a method may learn another kind with other hyperparameters

    def declared(self, method: str) -> dict[str, HParam]:
        """The hyperparameters ``method`` accepts on the family's kind of tasks."""
        cls = LEARNERS[method]
        return (cls.for_task_kind(self.task_kind) if self.task_kind else cls).hyperparameters

    def validate(self) -> None:
        """Raise ``ValueError("method.param: ...")`` for a name or value a learner does not accept."""
        for method, space in self.spaces.items():
            declared = self.declared(method)
            for name, spec in space.items():
                where = f"{method}.{name}"
                if name not in declared:
                    allowed = ", ".join(sorted(declared))
                    raise ValueError(f"{where}: unknown hyperparameter for {method} (allowed: {allowed})")
                hp = declared[name]
                try:
                    if isinstance(spec, (FloatRange, IntRange)):
                        if hp.type is bool:
                            raise ValueError(f"a range is not allowed for a {hp.describe()} hyperparameter")
                        if hp.type is int and isinstance(spec, FloatRange):
                            raise ValueError("an integer hyperparameter needs type: int or categorical")
                        hp.check("low", spec.low)
                        hp.check("high", spec.high)
                    elif isinstance(spec, Categorical):
                        for choice in spec.choices:
                            hp.check("choice", choice)
                    else:
                        hp.check("value", spec)
                except ValueError as exc:
                    raise ValueError(f"{where}: {exc} (allowed: {hp.describe()})") from None

    def suggest(self, trial: optuna.Trial, *, learned_floats: bool = False) -> tuple[str, dict[str, Any]]:
        """Sample a method, then its hyperparameters (named ``method.param`` in Optuna).

        ``learned_floats``: float ranges are not sampled but start at their middle (geometric
        on a log scale), for a learner that tunes them itself as it trains.
        """
        method = trial.suggest_categorical(METHOD_PARAM, self.methods)
        hparams: dict[str, Any] = {}
        for name, spec in self.spaces[method].items():
            key = f"{method}.{name}"
            if isinstance(spec, FloatRange) and learned_floats:
                hparams[name] = middle(spec)
            elif isinstance(spec, FloatRange):
                hparams[name] = trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=spec.step)
            elif isinstance(spec, IntRange):
                hparams[name] = trial.suggest_int(key, spec.low, spec.high, step=spec.step, log=spec.log)
            elif isinstance(spec, Categorical):
                hparams[name] = trial.suggest_categorical(key, spec.choices)
            else:
                hparams[name] = spec
        return method, hparams

    def fixed_methods(self) -> list[str]:
        """The methods whose space samples nothing: each has one configuration, worth one trial."""
        return [m for m, space in self.spaces.items()
                if not any(isinstance(spec, (FloatRange, IntRange, Categorical)) for spec in space.values())]

    def hparams_of(self, method: str, params: Mapping[str, Any], *, learned_floats: bool = False) -> dict[str, Any]:
        """A trial's hyperparameters from its Optuna ``params`` (searched) and the space (fixed, or learned)."""
        hparams = {}
        for name, spec in self.spaces[method].items():
            if isinstance(spec, FloatRange) and learned_floats:
                hparams[name] = middle(spec)
            elif isinstance(spec, (FloatRange, IntRange, Categorical)):
                hparams[name] = params[f"{method}.{name}"]
            else:
                hparams[name] = spec
        return hparams

    def to_data(self) -> dict[str, dict[str, Any]]:
        """The space as plain data (what a search-space file holds), to record with the study."""
        return {
            method: {name: spec.model_dump() if hasattr(spec, "model_dump") else spec for name, spec in space.items()}
            for method, space in self.spaces.items()
        }

    def enqueue_params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Optuna parameters for a fixed configuration ``{method: m, param: value, ...}``."""
        config = dict(config)
        method = config.pop(METHOD_PARAM, None)
        if method not in self.spaces:
            raise ValueError(f"method: {short(method)} is not one of the job's methods ({', '.join(self.methods)})")
        declared = self.declared(method)
        for name, value in config.items():
            if name not in declared:
                raise ValueError(f"{name}: unknown hyperparameter for {method} (allowed: {', '.join(sorted(declared))})")
            declared[name].check(name, value)
            _check_in_space(method, name, value, self.spaces[method])
        return {METHOD_PARAM: method, **{f"{method}.{name}": value for name, value in config.items()}}

    def could_give(self, config: Mapping[str, Any]) -> bool:
        """Whether the space's sampler could give ``config`` itself: ``enqueue_params`` takes it and every number lies
        within its range (an enqueued configuration may lie outside; a warm start's may not)."""
        try:
            self.enqueue_params(config)
        except ValueError:
            return False
        method = config[METHOD_PARAM]
        return all(spec.low <= config[name] <= spec.high for name, spec in self.spaces[method].items()
                   if isinstance(spec, (FloatRange, IntRange)) and name in config)


def _check_in_space(method: str, name: str, value: Any, space: Mapping[str, Any]) -> None:
    """An enqueued value the space could never give would crash Optuna (a choice) or be silently dropped (a fixed one)."""
    if name not in space:
        raise ValueError(f"{name}: {method}.{name} is not in the search space, so an enqueued value would be ignored "
                         f"(allowed: {', '.join(sorted(space)) or 'none'})")
    spec = space[name]
    if isinstance(spec, Categorical) and not any(value == c and type(value) is type(c) for c in spec.choices):
        raise ValueError(f"{name}: {short(value)} is not one of the space's choices (allowed: {', '.join(map(repr, spec.choices))})")
    if not isinstance(spec, (FloatRange, IntRange, Categorical)) and value != spec:
        raise ValueError(f"{name}: {short(value)} differs from the value the space fixes (allowed: {spec!r})")


def middle(spec: FloatRange) -> float:
    """The middle of a float range: geometric on a log scale."""
    return math.sqrt(spec.low * spec.high) if spec.log else (spec.low + spec.high) / 2
