"""Search strategies, one class each, chosen by name in the job file (``strategy: tpe``).

Adding an Optuna-sampler strategy is one ``Strategy`` subclass and one line in ``STRATEGIES``.
"""

from __future__ import annotations

from metaopt.search.strategies.base import Strategy
from metaopt.search.strategies.hypergrad import HyperGradient, TPEHyperGradient
from metaopt.search.strategies.samplers import NSGA2, TPE, CmaEs, GaussianProcess, Grid, Random, grid_size

STRATEGIES: dict[str, type[Strategy]] = {
    "tpe": TPE,
    "random": Random,
    "nsga2": NSGA2,
    "cmaes": CmaEs,
    "gp": GaussianProcess,
    "grid": Grid,
    "hypergrad": HyperGradient,
    "tpe+hypergrad": TPEHyperGradient,
}


def strategy(name: str) -> Strategy:
    """The strategy a job names."""
    return STRATEGIES[name]()


__all__ = ["NSGA2", "STRATEGIES", "CmaEs", "GaussianProcess", "Grid", "HyperGradient", "Random", "Strategy", "TPE",
           "TPEHyperGradient", "grid_size", "strategy"]
