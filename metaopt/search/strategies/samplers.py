"""The strategies that are an Optuna sampler and nothing more: TPE, random, NSGA-II, CMA-ES, Gaussian process, grid.

CMA-ES and the Gaussian process model the parameters every trial shares (with one
method: all of them); the conditional ones fall to a TPE sampler. ``grid``
enumerates every combination of a discrete space once (floats need a ``step``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import optuna

from metaopt.search.ranges import Categorical, FloatRange, IntRange
from metaopt.search.space import SearchSpace
from metaopt.search.strategies.base import Strategy, quiet, tpe

if TYPE_CHECKING:
    from metaopt.search.config import Job


class TPE(Strategy):
    """Multivariate TPE with ``group=True``; 5 random start-up trials."""

    name = "tpe"
    multi_objective = True

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """Optuna's ``TPESampler``."""
        return tpe(seed)


class Random(Strategy):
    """Uniform over the space."""

    name = "random"
    multi_objective = True

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """Optuna's ``RandomSampler``."""
        return optuna.samplers.RandomSampler(seed=seed)


class NSGA2(Strategy):
    """NSGA-II, the evolutionary sampler for two objectives (also takes one)."""

    name = "nsga2"
    multi_objective = True

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """Optuna's ``NSGAIISampler``."""
        return optuna.samplers.NSGAIISampler(seed=seed)


class CmaEs(Strategy):
    """CMA-ES over the shared parameters, TPE for the conditional ones."""

    name = "cmaes"

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """Optuna's ``CmaEsSampler`` with a TPE for what it cannot model."""
        return quiet(lambda: optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=5, independent_sampler=tpe(seed), warn_independent_sampling=False
        ))


class GaussianProcess(Strategy):
    """Optuna's Gaussian-process sampler over the shared parameters, TPE for the conditional ones."""

    name = "gp"

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """Optuna's ``GPSampler`` with a TPE for what it cannot model."""
        return quiet(lambda: optuna.samplers.GPSampler(
            seed=seed, n_startup_trials=5, independent_sampler=tpe(seed), warn_independent_sampling=False
        ))


class _BruteForce(optuna.samplers.BruteForceSampler):
    """Brute force over a discrete conditional space; the driver stops at the grid's size.

    (BruteForceSampler calls ``study.stop()`` when the grid is exhausted, which an
    ask/tell driver cannot take.)
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: ANN001 - Optuna's signature
        pass


class Grid(Strategy):
    """Every combination of a discrete space once; every float range needs a ``step``."""

    name = "grid"

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """Optuna's brute-force sampler over the conditional space."""
        return quiet(lambda: _BruteForce(seed=seed))

    def check(self, job: Job, space: SearchSpace) -> None:
        """A grid needs a finite space."""
        grid_size(space)

    def planned_trials(self, space: SearchSpace, budget: int) -> int:
        """The grid's size, when smaller than the budget."""
        return min(budget, grid_size(space))


def grid_size(space: SearchSpace) -> int:
    """Configurations a grid enumerates; ``ValueError("space.method.param: ...")`` for a continuous range."""
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
                    raise ValueError(f"space.{method}.{name}: strategy grid needs a step for every float range")
                size *= math.floor((spec.high - spec.low) / spec.step + 1e-9) + 1
        total += size
    return total
