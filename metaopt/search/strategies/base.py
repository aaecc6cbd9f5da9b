"""The ``Strategy`` base: how a search turns Optuna's suggestions into the learners its trials run."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import optuna

from metaopt.search.space import SearchSpace

if TYPE_CHECKING:
    from metaopt.search.config import Job


class Strategy(ABC):
    """A search strategy: the Optuna sampler it uses, how a sampled configuration becomes a learner's, what it checks.

    Every strategy sees the same conditional space: ``method`` first, then that
    method's hyperparameters (``method.param``). A subclass names its sampler; it may
    change the learner a configuration runs (``learner_config``), leave the float
    ranges to the learner (``learned_floats``), cap the trials (``planned_trials``)
    and reject a job it cannot run (``check``).

    Example:
        >>> strategy = STRATEGIES["tpe"]()
        >>> study = optuna.create_study(sampler=strategy.sampler(seed=0))
        >>> method, hparams = strategy.ask(study.ask(), space)
    """

    name: ClassVar[str]
    # Float ranges are not sampled but start mid-range: the learner tunes them as it trains.
    learned_floats: ClassVar[bool] = False

    @abstractmethod
    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The Optuna sampler of this strategy, seeded."""

    def check(self, job: Job, space: SearchSpace) -> None:
        """Raise ``ValueError("field.path: what is wrong")`` for a job this strategy cannot run."""

    def learner_config(self, space: SearchSpace, method: str, hparams: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The learner and hyperparameters a trial of ``method`` runs (the method itself by default)."""
        return method, hparams

    def planned_trials(self, space: SearchSpace, budget: int) -> int:
        """How many trials the search asks for, at most ``budget``."""
        return budget

    def ask(self, trial: optuna.Trial, space: SearchSpace) -> tuple[str, dict[str, Any]]:
        """Sample a configuration on ``trial``: the learner to run and its hyperparameters."""
        return self.learner_config(space, *space.suggest(trial, learned_floats=self.learned_floats))

    def recorded(self, space: SearchSpace, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The learner and hyperparameters of a trial from the Optuna ``params`` it recorded."""
        method = params["method"]
        return self.learner_config(space, method, space.hparams_of(method, params, learned_floats=self.learned_floats))


T = TypeVar("T")


def quiet(make: Callable[[], T]) -> T:
    """``make()`` without Optuna's "experimental feature" warnings (a sampler or a pruner)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return make()


def tpe(seed: int, n_startup_trials: int = 5) -> optuna.samplers.BaseSampler:
    """Multivariate TPE over the conditional space (``group=True``): the method and its sub-space jointly."""
    return quiet(lambda: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, n_startup_trials=n_startup_trials
    ))
