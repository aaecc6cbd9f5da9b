"""What every gradient-based learner shares: meta-parameters, the outer optimizer, adaptation and evaluation.

A subclass says only what differs: which parameters adapt (``adapted_names``),
the learning rate of each inner step (``inner_lrs``), how the inner gradient is
preconditioned (``preconditioner``), any extra learned tensors (``extras``), and
which losses the outer step sums (``meta_loss``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metaopt.learners.base import POSITIVE_FLOAT, HParam, MetaLearner
from metaopt.learners.core import (
    InnerLoop,
    LearningRate,
    Params,
    adapt_batch,
    adapted_query_losses,
    batched_forward,
    batched_loss,
    detach,
    make_loss,
)
from metaopt.learners.inner_optimizers import INNER_OPTIMIZERS, InnerOptimizer
from metaopt.tasks.base import TaskBatch

GRADIENT_HPARAMS: dict[str, HParam] = {
    "inner_lr": HParam(default=0.01, help="inner-loop step size", **POSITIVE_FLOAT),
    "inner_steps": HParam(type=int, default=1, minimum=1, help="inner-loop steps per task"),
    "inner_optimizer": HParam(type=str, default="sgd", choices=tuple(INNER_OPTIMIZERS), help="differentiable inner optimizer"),
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
            device = next(iter(self.params.values())).device
            return functional_call(self.model, (self.params, self.buffers), (x.to(device),))


class GradientLearner(MetaLearner):
    """A learner whose adaptation is a differentiable inner loop from meta-learned parameters."""

    hyperparameters: ClassVar[dict[str, HParam]] = GRADIENT_HPARAMS
    first_order: ClassVar[bool] = False

    def __init__(
        self,
        backbone: nn.Module,
        hparams: Mapping[str, Any] | None = None,
        *,
        task_kind: str,
        max_iterations: int | None = None,
    ) -> None:
        super().__init__(backbone, hparams, task_kind=task_kind, max_iterations=max_iterations)
        self.params: Params = dict(backbone.named_parameters())
        self.extras: dict[str, nn.Parameter] = self.make_extras()
        self.loss = make_loss(backbone, task_kind)
        self.inner_optimizer: InnerOptimizer = INNER_OPTIMIZERS[self.hparams.get("inner_optimizer", "sgd")]()
        self.optimizer = self.make_optimizer()

    # -- what a subclass may change -------------------------------------------------
    def make_extras(self) -> dict[str, nn.Parameter]:
        """Learned tensors besides the network's parameters (learning rates, preconditioners)."""
        return {}

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The outer optimizer over every meta-parameter (Adam by default)."""
        return torch.optim.Adam(self.meta_parameters().values(), lr=self.hparams["outer_lr"])

    def adapted_names(self) -> frozenset[str] | None:
        """Parameters the inner loop adapts (None: all of them)."""
        return None

    def inner_lrs(self, steps: int | None = None) -> Sequence[LearningRate]:
        """The learning rate of each inner step."""
        return [self.hparams["inner_lr"]] * self.steps(steps)

    def preconditioner(self) -> Callable[[Params], Params] | None:
        """A transform of the inner gradient (None: the identity)."""
        return None

    # -- shared machinery -----------------------------------------------------------
    def steps(self, steps: int | None = None) -> int:
        """Inner steps: ``steps`` if given, else as trained."""
        return self.hparams["inner_steps"] if steps is None else steps

    def meta_parameters(self) -> dict[str, Tensor]:
        """Every tensor the outer loop learns: the network's parameters and the extras."""
        return {**self.params, **self.extras}

    def inner_loop(self, *, steps: int | None = None, first_order: bool | None = None) -> InnerLoop:
        """This learner's inner loop."""
        return InnerLoop(
            lrs=self.inner_lrs(steps),
            first_order=self.first_order if first_order is None else first_order,
            adapt=self.adapted_names(),
            precondition=self.preconditioner(),
            optimizer=self.inner_optimizer,
        )

    def adapt_batch(self, batch: TaskBatch, *, first_order: bool, steps: int | None = None) -> Params:
        """Per-task adapted parameters ``{name: [tasks, ...]}`` from the support sets."""
        inner = self.inner_loop(steps=steps, first_order=first_order)
        return adapt_batch(self.loss, self.params, batch.support_x, batch.support_y, inner)

    def meta_loss(self, batch: TaskBatch) -> Tensor:
        """Mean query loss after adaptation, differentiable with respect to the meta-parameters."""
        return adapted_query_losses(self.loss, self.params, batch, self.inner_loop()).mean()

    def meta_step(self, batch: TaskBatch) -> dict[str, Tensor]:
        """Backpropagate the meta-loss and take one outer optimizer step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.meta_loss(batch)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return {"loss": loss.detach()}

    def evaluate(self, batch: TaskBatch, steps: int | None = None) -> dict[str, Tensor]:
        """Per-task query loss before and after ``steps`` inner steps (default: as trained)."""
        with torch.no_grad():
            params = detach(self.params)
            before = batched_loss(self.loss, params, batch.query_x, batch.query_y, params_batched=False)
            inner = self.inner_loop(steps=steps, first_order=True)
            adapted = adapt_batch(self.loss, params, batch.support_x, batch.support_y, inner)
            metrics = {"loss_before": before, "loss": batched_loss(self.loss, adapted, batch.query_x, batch.query_y)}
            if self.task_kind == "classification":
                logits = batched_forward(self.backbone, adapted, batch.query_x)  # [tasks, queries, ways]
                metrics["accuracy"] = (logits.argmax(-1) == batch.query_y).float().mean(-1)
        return metrics

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> AdaptedModel:
        """Fine-tune a copy of the meta-parameters on one task's support set."""
        device = self.device
        with torch.no_grad():
            inner = self.inner_loop(steps=steps, first_order=True)
            adapted = inner.run(self.loss, detach(self.params), support_x.to(device), support_y.to(device))
        return AdaptedModel(self.backbone, adapted)

    def state_dict(self) -> dict[str, Any]:
        """Meta-parameters, the outer optimizer's state and the iteration count."""
        return {
            "meta_parameters": {k: v.detach().clone() for k, v in self.meta_parameters().items()},
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore meta-parameters (and the optimizer and iteration count, when present)."""
        current = self.meta_parameters()
        missing = sorted(set(current) - set(state["meta_parameters"]))
        if missing:
            raise KeyError(f"state has no meta-parameter {missing[0]!r} for {self.name}")
        with torch.no_grad():
            for name, value in state["meta_parameters"].items():
                current[name].copy_(value)
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state.get("iteration", 0))


def head_names(model: nn.Module) -> frozenset[str]:
    """Parameter names of the last submodule that has parameters (the classifier / regressor head)."""
    last = None
    for name, module in model.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            last = name
    if last is None:
        raise ValueError("the backbone has no parameters")
    prefix = f"{last}." if last else ""
    return frozenset(n for n, _ in model.named_parameters() if n.startswith(prefix) and "." not in n[len(prefix):])
