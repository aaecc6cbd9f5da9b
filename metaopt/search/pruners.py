"""The Optuna pruner a job names; its steps are meta-iterations (Wilcoxon: validation episodes)."""

from __future__ import annotations

import optuna

from metaopt.search.config import Budget, PrunerSpec
from metaopt.search.strategies.base import quiet


def make_pruner(spec: PrunerSpec, budget: Budget) -> optuna.pruners.BasePruner:
    """The pruner ``spec`` describes, with rungs sized by ``budget``."""
    if spec.type == "none":
        return optuna.pruners.NopPruner()
    if spec.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=spec.min_resource or budget.eval_interval,
            max_resource=budget.meta_iterations,
            reduction_factor=spec.reduction_factor,
        )
    if spec.type == "wilcoxon":
        return quiet(lambda: optuna.pruners.WilcoxonPruner(p_threshold=spec.p_threshold))
    return optuna.pruners.MedianPruner(n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps)
