"""Search strategies (Optuna samplers) and pruners, chosen by name in the job file."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from metaopt.search.config import PrunerSpec


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    # multivariate + group: the method choice and its conditional hyperparameters are modelled jointly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)


STRATEGIES: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


def make_pruner(spec: PrunerSpec) -> optuna.pruners.BasePruner:
    """The Optuna pruner a job asks for."""
    if spec.type == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)
