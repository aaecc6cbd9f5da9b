"""Search strategies (Optuna samplers) and pruners, chosen by name in the job file.

Every strategy sees the same conditional space: ``method`` first, then that
method's hyperparameters (``method.param``). TPE models the two jointly
(multivariate, ``group=True``). CMA-ES and the Gaussian process model the
parameters every trial shares (with one method: all of them); the conditional
ones fall to a TPE sampler. ``grid`` enumerates every combination of a discrete
space once (floats need a ``step``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import optuna

from metaopt.search.config import Budget, Categorical, FloatRange, IntRange, PrunerSpec
from metaopt.search.space import SearchSpace


def _quiet(make: Callable[[], optuna.samplers.BaseSampler]) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return make()


def _tpe(seed: int, n_startup_trials: int = 5) -> optuna.samplers.BaseSampler:
    return _quiet(lambda: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, n_startup_trials=n_startup_trials
    ))


class _Grid(optuna.samplers.BruteForceSampler):
    """Brute force over a discrete conditional space; the driver stops at the grid's size.

    (BruteForceSampler calls ``study.stop()`` when the grid is exhausted, which an
    ask/tell driver cannot take.)
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001 - Optuna's signature
        pass


STRATEGIES: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "cmaes": lambda seed: _quiet(lambda: optuna.samplers.CmaEsSampler(
        seed=seed, n_startup_trials=5, independent_sampler=_tpe(seed), warn_independent_sampling=False
    )),
    "gp": lambda seed: _quiet(lambda: optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=5, independent_sampler=_tpe(seed), warn_independent_sampling=False
    )),
    "grid": lambda seed: _quiet(lambda: _Grid(seed=seed)),
    # The hypergradient learner tunes the continuous hyperparameters inside each trial: `hypergrad` starts
    # each trial from a random configuration, `tpe+hypergrad` lets TPE choose the method and the discrete
    # settings and starts the continuous ones at the middle of their ranges.
    "hypergrad": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe+hypergrad": _tpe,
}
HYPERGRAD_STRATEGIES = ("hypergrad", "tpe+hypergrad")


def samples_floats(strategy: str) -> bool:
    """Whether the sampler picks float hyperparameters (not for ``tpe+hypergrad``: the learner does)."""
    return strategy != "tpe+hypergrad"


def trial_learner(strategy: str, space: SearchSpace, method: str, hparams: dict) -> tuple[str, dict]:
    """The learner a trial runs: the method itself, or, for a hypergradient strategy, ``hypergrad`` on it.

    The hypergradient learner clamps the rates it learns to the search space's ranges.
    """
    if strategy not in HYPERGRAD_STRATEGIES:
        return method, hparams
    learned = {"base": method, **hparams}
    for name, low, high in (("inner_lr", "min_inner_lr", "max_inner_lr"), ("outer_lr", "min_outer_lr", "max_outer_lr")):
        spec = space.spaces[method].get(name)
        if isinstance(spec, FloatRange):
            learned[low], learned[high] = spec.low, spec.high
    return "hypergrad", learned


def make_sampler(strategy: str, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of a strategy name."""
    return STRATEGIES[strategy](seed)


def grid_size(space: SearchSpace) -> int:
    """Number of configurations a grid search enumerates; ``ValueError("method.param: ...")`` for a continuous one."""
    total = 0
    for method, params in space.spaces.items():
        size = 1
        for name, spec in params.items():
            if isinstance(spec, Categorical):
                size *= len(spec.choices)
            elif isinstance(spec, IntRange):
                size *= (spec.high - spec.low) // spec.step + 1
            elif isinstance(spec, FloatRange):
                if spec.step is None:
                    raise ValueError(f"{method}.{name}: strategy grid needs a step for every float range")
                size *= math.floor((spec.high - spec.low) / spec.step + 1e-9) + 1
        total += size
    return total


def make_pruner(spec: PrunerSpec, budget: Budget) -> optuna.pruners.BasePruner:
    """The Optuna pruner a job asks for; steps are meta-iterations (Wilcoxon: validation episodes)."""
    if spec.type == "none":
        return optuna.pruners.NopPruner()
    if spec.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.min_resource or budget.eval_interval,
            max_resource=budget.meta_iterations,
            reduction_factor=spec.reduction_factor,
        )
    if spec.type == "wilcoxon":
        return _quiet(lambda: optuna.pruners.WilcoxonPruner(p_threshold=spec.p_threshold))
    return optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)
