"""What every gradient-based learner shares: meta-parameters, the outer optimizer, adaptation and evaluation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metaopt.learners.base import POSITIVE_FLOAT, HParam, MetaLearner
from metaopt.learners.core import (
    LearningRate,
    Params,
    adapt_batch,
    adapted_query_losses,
    batched_forward,
    batched_loss,
    detach,
    inner_loop,
    make_loss,
)
from metaopt.tasks.base import TaskBatch

GRADIENT_HPARAMS: dict[str, HParam] = {
    "inner_lr": HParam(default=0.01, help="inner-loop SGD step size", **POSITIVE_FLOAT),
    "inner_steps": HParam(type=int, default=1, minimum=1, help="inner-loop steps per task"),
    "outer_lr": HParam(default=0.001, help="outer (meta) optimizer learning rate", **POSITIVE_FLOAT),
    "meta_batch": HParam(type=int, default=25, minimum=1, help="tasks per meta-batch"),
}


class AdaptedModel:
    """The backbone evaluated at one task's adapted parameters."""

    def __init__(self, model: nn.Module, params: Params) -> None:
        self.model, self.params = model, params
        self.buffers = dict(model.named_buffers())

    def __call__(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return functional_call(self.model, (self.params, self.buffers), (x.to(_device_of(self.params)),))


class GradientLearner(MetaLearner):
    """A learner whose adaptation is gradient descent from meta-learned parameters."""

    hyperparameters: ClassVar[dict[str, HParam]] = GRADIENT_HPARAMS
    first_order: ClassVar[bool] = False

    def __init__(self, backbone: nn.Module, hparams: Mapping[str, Any] | None = None, *, task_kind: str) -> None:
        super().__init__(backbone, hparams, task_kind=task_kind)
        self.params: Params = dict(backbone.named_parameters())
        self.loss = make_loss(backbone, task_kind)
        self.optimizer = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The outer optimizer over every meta-parameter (Adam by default)."""
        return torch.optim.Adam(self.meta_parameters().values(), lr=self.hparams["outer_lr"])

    def meta_parameters(self) -> dict[str, Tensor]:
        """Every tensor the outer loop learns (the network's parameters, plus any learned extras)."""
        return dict(self.params)

    def inner_lrs(self, steps: int | None = None) -> Sequence[LearningRate]:
        """The learning rate of each inner step."""
        return [self.hparams["inner_lr"]] * (self.hparams["inner_steps"] if steps is None else steps)

    def adapt_batch(self, batch: TaskBatch, *, first_order: bool, steps: int | None = None) -> Params:
        """Per-task adapted parameters ``{name: [tasks, ...]}`` from the support sets."""
        return adapt_batch(
            self.loss, self.params, batch.support_x, batch.support_y, self.inner_lrs(steps), first_order=first_order
        )

    def meta_loss(self, batch: TaskBatch) -> Tensor:
        """Mean query loss after adaptation, differentiable with respect to the meta-parameters."""
        return adapted_query_losses(self.loss, self.params, batch, self.inner_lrs(), first_order=self.first_order).mean()

    def meta_step(self, batch: TaskBatch) -> dict[str, Tensor]:
        """Backpropagate the meta-loss and take one outer optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.meta_loss(batch)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.detach()}

    def evaluate(self, batch: TaskBatch, steps: int | None = None) -> dict[str, Tensor]:
        """Per-task query loss before and after ``steps`` inner steps (default: as trained)."""
        with torch.no_grad():
            params = detach(self.params)
            before = batched_loss(self.loss, params, batch.query_x, batch.query_y, params_batched=False)
            adapted = adapt_batch(
                self.loss, params, batch.support_x, batch.support_y, self.inner_lrs(steps), first_order=True
            )
            metrics = {"loss_before": before, "loss": batched_loss(self.loss, adapted, batch.query_x, batch.query_y)}
            if self.task_kind == "classification":
                logits = batched_forward(self.backbone, adapted, batch.query_x)  # [tasks, queries, ways]
                metrics["accuracy"] = (logits.argmax(-1) == batch.query_y).float().mean(-1)
        return metrics

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> AdaptedModel:
        """Fine-tune a copy of the meta-parameters on one task's support set."""
        device = self.device
        with torch.no_grad():
            adapted = inner_loop(
                self.loss,
                detach(self.params),
                support_x.to(device),
                support_y.to(device),
                self.inner_lrs(steps),
                first_order=True,
            )
        return AdaptedModel(self.backbone, adapted)

    def state_dict(self) -> dict[str, Any]:
        """Meta-parameters and the outer optimizer's state."""
        return {
            "meta_parameters": {k: v.detach().clone() for k, v in self.meta_parameters().items()},
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore meta-parameters (and the optimizer, when present)."""
        current = self.meta_parameters()
        missing = sorted(set(current) - set(state["meta_parameters"]))
        if missing:
            raise KeyError(f"state has no meta-parameter {missing[0]!r} for {self.name}")
        with torch.no_grad():
            for name, value in state["meta_parameters"].items():
                current[name].copy_(value)
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])


def _device_of(params: Params) -> torch.device:
    return next(iter(params.values())).device
