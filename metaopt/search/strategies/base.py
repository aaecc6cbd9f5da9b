"""The ``Strategy`` base: how a search turns Optuna's suggestions into the learners its trials run."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
import random
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import optuna

from metaopt.search.space import METHOD_PARAM, SearchSpace

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
    # Its sampler takes a study of two objectives (the primary metric and the adaptation cost).
    multi_objective: ClassVar[bool] = False

    @abstractmethod
    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The Optuna sampler of this strategy, seeded."""

    def study_sampler(self, seed: int, space: SearchSpace | None = None) -> optuna.samplers.BaseSampler:
        """What a search's study samples with: ``sampler`` made afresh for each trial (``PerTrialSeed``), never
        drawing again a method of ``space`` that has one configuration and a trial already."""
        return PerTrialSeed(self.sampler, seed, once=space.fixed_methods() if space is not None else ())

    def check(self, job: Job, space: SearchSpace) -> None:
        """Raise ``ValueError("field.path: what is wrong")`` for a job this strategy cannot run."""

    def learner_config(self, space: SearchSpace, method: str, hparams: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The learner and hyperparameters a trial of ``method`` runs (the method itself by default)."""
        return method, hparams

    def planned_trials(self, space: SearchSpace, budget: int) -> int:
        """How many trials the search asks for, at most ``budget`` (one a method when no method samples anything)."""
        return min(budget, len(space.methods)) if len(space.fixed_methods()) == len(space.methods) else budget

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


class PerTrialSeed(optuna.samplers.BaseSampler):
    """A strategy's sampler made afresh for every trial, seeded by the job's seed and the trial's number.

    What a trial samples is then a function of the seed, its number and the study's history
    only, not of how many trials this process asked before: a search resumed by a new driver
    (or one interrupted and resumed) samples what an unbroken one does.
    """

    # Draws of a method that must not run again, before one is picked among the others at random.
    REDRAWS: ClassVar[int] = 8

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int,
                 once: Iterable[str] = ()) -> None:
        self._make, self._seed, self._once = make, seed, frozenset(once)
        self._sampler = make(seed)

    def _trial_seed(self, number: int, draw: int = 0) -> int:
        return (self._seed * 1_000_003 + number + draw * 7_919) % 2**32

    def _for(self, number: int) -> None:
        self._sampler = self._make(self._trial_seed(number))

    def _redraw(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, draw: int) -> optuna.samplers.BaseSampler:
        """The trial's ``draw``-th other sampler, prepared as Optuna prepares one."""
        sampler = self._make(self._trial_seed(trial.number, draw))
        sampler.before_trial(study, trial)
        sampler.infer_relative_search_space(study, trial)
        return sampler

    def _tried(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> set[str]:
        """The one-configuration methods some other trial of the study has (run, running or waiting to)."""
        if not self._once:
            return set()
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        # An enqueued trial not yet asked holds its method in Optuna's fixed_params.
        return ({t.params.get(METHOD_PARAM) for t in others}
                | {t.system_attrs.get("fixed_params", {}).get(METHOD_PARAM) for t in others}) & self._once

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """A sampler seeded for this trial, then its own preparation."""
        self._for(trial.number)
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """The trial's sampler's joint space."""
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict[str, Any]) -> dict[str, Any]:
        """The trial's sampler's joint sample; drawn again while it names a method that must not run again."""
        tried = self._tried(study, trial)
        sample = self._sampler.sample_relative(study, trial, search_space)
        for draw in range(1, self.REDRAWS + 1):
            if sample.get(METHOD_PARAM) not in tried:
                return sample
            sample = self._redraw(study, trial, draw).sample_relative(study, trial, search_space)
        # Still such a method: leave the method to sample_independent, which picks among the others.
        return {} if sample.get(METHOD_PARAM) in tried else sample

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: Any) -> Any:
        """The trial's sampler's sample of one parameter; a method that must not run again is drawn again."""
        value = self._sampler.sample_independent(study, trial, param_name, param_distribution)
        if param_name != METHOD_PARAM or value not in (tried := self._tried(study, trial)):
            return value
        for draw in range(1, self.REDRAWS + 1):
            value = self._redraw(study, trial, draw).sample_independent(study, trial, param_name, param_distribution)
            if value not in tried:
                return value
        left = [c for c in param_distribution.choices if c not in tried]
        if not left:  # every method has had its trial: repeat one
            return value
        return left[random.Random(self._trial_seed(trial.number)).randrange(len(left))]

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: Any, values: Any) -> None:
        """The sampler of the finished trial is told."""
        self._for(trial.number)
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        """Seeds come from the trial numbers; nothing to reseed."""
