"""Reptile (Nichol, Achiam & Schulman 2018, "On First-Order Meta-Learning Algorithms").

Per task i, k steps of SGD on the task's support data give phi_i; the batched
meta-update moves the initialisation toward their mean, with step size epsilon:
    theta <- theta + epsilon * (mean_i phi_i - theta)
implemented as the "gradient" (theta - mean_i phi_i) fed to the outer optimizer
(plain SGD with lr = epsilon, so the update is exactly the rule above).
As in the paper, epsilon anneals linearly to zero over the training budget
(``anneal``; needs ``max_iterations``), which also keeps long runs stable.
Batched Reptile (the paper's Algorithm 2) adapts the meta-batch's tasks in one
vmapped inner loop; serial Reptile (Algorithm 1) is the same with ``meta_batch: 1``.
Reptile needs no query set for training; the query loss is reported for monitoring.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metaopt.learners.base import POSITIVE_FLOAT, HParam
from metaopt.learners.core import Params, adapt_batch, batched_loss, detach
from metaopt.learners.gradient import GRADIENT_HPARAMS, GradientLearner
from metaopt.learners.outer import Schedule
from metaopt.tasks.base import TaskBatch


class Reptile(GradientLearner):
    """Batched Reptile: one vmapped inner loop per meta-batch, SGD meta-step of size epsilon."""

    name = "reptile"
    first_order = True
    hyperparameters = {
        **{k: v for k, v in GRADIENT_HPARAMS.items() if k not in ("outer_schedule", "min_outer_lr")},
        "inner_lr": HParam(default=0.01, help="inner-loop step size", **POSITIVE_FLOAT),
        "inner_steps": HParam(type=int, default=5, minimum=1, help="inner-loop steps per task"),
        "outer_lr": HParam(default=0.1, help="meta step size epsilon", **POSITIVE_FLOAT),
        "anneal": HParam(type=bool, default=True, help="anneal epsilon linearly to 0 over the budget"),
    }

    outer_optimizer = "sgd"  # plain SGD, so that the outer step is Reptile's interpolation

    def outer_schedule(self) -> Schedule | None:
        """epsilon * (1 - iteration / budget) with ``anneal``."""
        return Schedule.of("linear" if self.hparams["anneal"] else "constant", self.max_iterations)

    def meta_gradient(self, meta: Params, batch: TaskBatch, inputs: dict[str, Tensor]) -> tuple[Params, Tensor]:
        """The pseudo-gradient theta - mean_i phi_i, and the query loss after adaptation (for monitoring)."""
        params = detach(self.network(meta))
        adapted = adapt_batch(self.loss, params, batch.support_x, batch.support_y, self.inner_loop(meta, first_order=True))
        grads = {name: p - adapted[name].mean(0) for name, p in params.items()}
        return grads, batched_loss(self.loss, adapted, batch.query_x, batch.query_y, loop=self.loops_tasks()).mean()

    def eager_meta_gradient(self, meta: Params, batch: TaskBatch, inputs: dict[str, Tensor]) -> tuple[Params, Tensor]:
        """No backpropagation: the pseudo-gradient needs only the inner loop."""
        with torch.no_grad():
            return self.meta_gradient(meta, batch, inputs)
