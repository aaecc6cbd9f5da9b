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
from metaopt.learners.core import LearningRate, Params
from metaopt.learners.gradient import GradientLearner
from metaopt.learners.inner_optimizers import INNER_OPTIMIZERS


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

    def __init__(self, backbone: torch.nn.Module, hparams: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, hparams, **kwargs)
        self.inner_optimizer = INNER_OPTIMIZERS[self.hparams["optimizer"]]()

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Nothing is meta-trained: a placeholder optimizer that never moves the initialisation."""
        return torch.optim.SGD(self.meta_parameters().values(), lr=0.0)

    def steps(self, steps: int | None = None) -> int:
        """Training steps on the support set: ``steps`` if given, else the hyperparameter."""
        return self.hparams["steps"] if steps is None else steps

    test_steps = steps

    def inner_lrs(self, meta: Params, steps: int | None = None) -> Sequence[LearningRate]:
        """``lr`` at every step."""
        return [self.hparams["lr"]] * self.steps(steps)

    def meta_step(self, batch: Any) -> dict[str, Tensor]:
        """Nothing to meta-learn."""
        self.iteration += 1
        return {"loss": torch.zeros((), device=self.device)}
