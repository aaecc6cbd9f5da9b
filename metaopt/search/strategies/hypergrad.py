"""The hypergradient strategies: each trial runs the ``hypergrad`` learner on the sampled base method.

The learner tunes the continuous hyperparameters inside each trial (per-layer,
per-step inner rates, the inner weight decay, the outer rate), clamped to the
search space's ranges. ``hypergrad`` starts each trial from a random configuration;
``tpe+hypergrad`` lets TPE choose the method and the discrete settings and starts the
continuous ones at the middle of their ranges. A baseline (``scratch``, ``pretrain``) runs
as itself: it has no meta-learned rates to tune.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna

from metaopt.learners.hypergrad import BASES, HyperGrad
from metaopt.search.ranges import FloatRange
from metaopt.search.space import SearchSpace
from metaopt.search.strategies.base import Strategy, tpe

if TYPE_CHECKING:
    from metaopt.search.config import Job

# The clamps the hypergrad learner keeps each learned rate in, taken from the search space's ranges.
CLAMPS = (("inner_lr", "min_inner_lr", "max_inner_lr"), ("outer_lr", "min_outer_lr", "max_outer_lr"))


class HyperGradient(Strategy):
    """Random configurations, each trained by the hypergradient learner that tunes its own rates."""

    name = "hypergrad"

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """Random starting configurations."""
        return optuna.samplers.RandomSampler(seed=seed)

    def check(self, job: Job, space: SearchSpace) -> None:
        """Only the base methods the learner knows, and only hyperparameters it takes."""
        others = [m for m in job.methods if m not in BASES and m not in (job.baselines or [])]
        if others:
            raise ValueError(f"methods: strategy {self.name} learns the hyperparameters of {', '.join(BASES)} only, "
                             f"not {', '.join(others)}")
        declared = HyperGrad.hyperparameters
        for method in (m for m in job.methods if m in BASES):
            for name in space.spaces[method]:
                if name not in declared:
                    raise ValueError(f"space.{method}.{name}: strategy {self.name} trains {method} as the hypergrad "
                                     f"learner, which has no {name} (allowed: {', '.join(sorted(declared))})")

    def learner_config(self, space: SearchSpace, method: str, hparams: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``hypergrad`` on ``method``, its learned rates clamped to the space's ranges (a baseline as itself)."""
        if method not in BASES:
            return method, hparams
        learned = {"base": method, **hparams}
        for name, low, high in CLAMPS:
            spec = space.spaces[method].get(name)
            if isinstance(spec, FloatRange):
                learned[low], learned[high] = spec.low, spec.high
        return "hypergrad", learned


class TPEHyperGradient(HyperGradient):
    """TPE picks the method and the discrete settings; the learner tunes the continuous ones from mid-range."""

    name = "tpe+hypergrad"
    learned_floats = True

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """TPE over what is not learned."""
        return tpe(seed)
