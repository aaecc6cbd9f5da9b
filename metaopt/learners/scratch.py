"""``scratch``: no meta-learning at all, a fresh network trained on each task's support set alone.

The "standard learning" row of the question every user asks first (does meta-learning pay on
my family?): the job's backbone at its random initialisation, ``steps`` steps of ``optimizer``
at ``lr`` on the support set, every task at once through the functional core's vmapped inner
loop. Nothing is meta-trained, so, like the classic RL policies, it is evaluated once, at the
end of the budget, on the same validation and test tasks as the meta-learners.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from metaopt.learners.base import POSITIVE_FLOAT, HParam
from metaopt.learners.core import Params, Step
from metaopt.learners.gradient import GradientLearner
from metaopt.learners.transforms import INNER_OPTIMIZERS, GradientTransform


class Scratch(GradientLearner):
    """Train the randomly initialised backbone on each task's support set only."""

    name: ClassVar[str] = "scratch"
    trains: ClassVar[bool] = False
    baseline: ClassVar[bool] = True
    compilable: ClassVar[bool] = False
    hyperparameters: ClassVar[dict[str, HParam]] = {
        "lr": HParam(default=0.01, help="step size of training on the support set", **POSITIVE_FLOAT),
        "steps": HParam(type=int, default=100, minimum=1, help="training steps on the support set"),
        "optimizer": HParam(type=str, default="adam", choices=tuple(INNER_OPTIMIZERS), help="its optimizer"),
        "meta_batch": HParam(type=int, default=1, minimum=1, help="tasks drawn per (empty) meta-step"),
    }

    def inner_transform(self, meta: Params) -> GradientTransform:
        """Its ``optimizer``."""
        return INNER_OPTIMIZERS[self.hparams["optimizer"]]()

    def steps(self, steps: int | None = None) -> int:
        """Training steps on the support set: ``steps`` if given, else the hyperparameter."""
        return self.hparams["steps"] if steps is None else steps

    test_steps = steps

    def inner_schedule(self, meta: Params, steps: int | None = None) -> Sequence[Step]:
        """``lr`` at every step."""
        return [Step(self.hparams["lr"])] * self.steps(steps)

    def meta_step(self, batch: Any) -> dict[str, Tensor]:
        """Nothing to meta-learn."""
        self.outer.advance()
        return {"loss": torch.zeros((), device=self.device)}
