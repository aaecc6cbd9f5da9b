"""Meta-SGD (Li, Zhou, Chen & Li 2017, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning").

Inner loop, per task i:  theta_i = theta - alpha (elementwise) grad_theta L_support_i(theta)
Outer loop:              (theta, alpha) <- Adam(grad_(theta, alpha) mean_i L_query_i(theta_i))
alpha has the shape of theta (one learning rate per parameter entry), starts at
``inner_lr`` and is meta-learned with the initialisation; every inner step uses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metaopt.learners.core import Params, Step
from metaopt.learners.gradient import GradientLearner

LR_PREFIX = "lr:"


class MetaSGD(GradientLearner):
    """MAML with a learned learning rate for every parameter entry."""

    name = "metasgd"

    def make_extras(self) -> dict[str, nn.Parameter]:
        """alpha, shaped like each parameter, filled with ``inner_lr``."""
        return {
            LR_PREFIX + name: nn.Parameter(torch.full_like(p.detach(), self.hparams["inner_lr"]))
            for name, p in self.params.items()
        }

    def inner_schedule(self, meta: Params, steps: int | None = None) -> Sequence[Step]:
        """The same learned alpha at every step."""
        alpha = {name: meta[LR_PREFIX + name] for name in self.params}
        return [Step(alpha)] * self.steps(steps)
