"""What every gradient-based learner shares: meta-parameters, the outer optimizer, adaptation and evaluation.

A subclass says only what differs: which parameters adapt (``adapted_names``),
the learning rate of each inner step (``inner_lrs``), how the inner gradient is
preconditioned (``preconditioner``), any extra learned tensors (``make_extras``),
and which losses the outer step sums (``meta_loss``). These read the
meta-parameters from the ``meta`` dict they are given, never from ``self``, so the
whole meta-gradient is a pure function that ``torch.compile`` can take whole.
"""

from __future__ import annotations

import math
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
    loops_tasks,
    make_loss,
)
from metaopt.learners.inner_optimizers import INNER_OPTIMIZERS, Adam, InnerOptimizer
from metaopt.tasks.base import TaskBatch

GRADIENT_HPARAMS: dict[str, HParam] = {
    "inner_lr": HParam(default=0.01, help="inner-loop step size", **POSITIVE_FLOAT),
    "inner_steps": HParam(type=int, default=1, minimum=1, help="inner-loop steps per task"),
    "test_steps": HParam(type=int, default=None, minimum=1, help="inner steps when adapting at test (default: inner_steps)"),
    "inner_optimizer": HParam(type=str, default="sgd", choices=tuple(INNER_OPTIMIZERS), help="differentiable inner optimizer"),
    "outer_lr": HParam(default=0.001, help="outer (meta) optimizer learning rate", **POSITIVE_FLOAT),
    "meta_batch": HParam(type=int, default=25, minimum=1, help="tasks per meta-batch"),
    "max_grad_norm": HParam(default=math.inf, help="clip the meta-gradient to this norm (inf: no clipping)",
                            **POSITIVE_FLOAT),
    # Task-aware fine-tuning: at test, after the learner's own adaptation, more steps on the support set.
    "ft_steps": HParam(type=int, default=0, minimum=0, help="task-aware fine-tuning: Adam steps on the support set "
                       "after adaptation, at test only (0: none)"),
    "ft_lr": HParam(default=0.001, help="task-aware fine-tuning step size", **POSITIVE_FLOAT),
    "ft_layers": HParam(type=str, default="all", choices=("all", "head"), help="what task-aware fine-tuning trains"),
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
    task_kinds: ClassVar[tuple[str, ...]] = ("regression", "classification", "rating")
    first_order: ClassVar[bool] = False
    # How a meta-batch's tasks are mapped: "auto" (a loop for convolutions on the CPU, else vmap), "vmap", "loop".
    task_mapping: str = "auto"

    def __init__(
        self,
        backbone: nn.Module,
        hparams: Mapping[str, Any] | None = None,
        *,
        task_kind: str,
        max_iterations: int | None = None,
        n_way: int | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(backbone, hparams, task_kind=task_kind, max_iterations=max_iterations, n_way=n_way)
        self.params: Params = dict(backbone.named_parameters())
        self.extras: dict[str, nn.Parameter] = self.make_extras()
        self.loss = make_loss(backbone, task_kind)
        self.inner_optimizer: InnerOptimizer = INNER_OPTIMIZERS[self.hparams.get("inner_optimizer", "sgd")]()
        self.optimizer = self.make_optimizer()
        self.scheduler = self.make_scheduler()
        self.compiled = None
        if compile:
            self.compile()

    @classmethod
    def resolve_hparams(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """As for every learner; ``test_steps`` left unset is the training ``inner_steps``."""
        hparams = super().resolve_hparams(given)
        if hparams.get("test_steps", 0) is None:
            hparams["test_steps"] = hparams["inner_steps"]
        return hparams

    # -- what a subclass may change -------------------------------------------------
    def make_extras(self) -> dict[str, nn.Parameter]:
        """Learned tensors besides the network's parameters (learning rates, preconditioners)."""
        return {}

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The outer optimizer over every meta-parameter (Adam by default)."""
        return torch.optim.Adam(self.meta_parameters().values(), lr=self.hparams["outer_lr"])

    def make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler | None:
        """A schedule of the outer learning rate, stepped after every meta-step (None: constant)."""
        return None

    def adapted_names(self) -> frozenset[str] | None:
        """Parameters the inner loop adapts (None: all of them)."""
        return None

    def inner_lrs(self, meta: Params, steps: int | None = None) -> Sequence[LearningRate]:
        """The learning rate of each inner step."""
        return [self.hparams["inner_lr"]] * self.steps(steps)

    def preconditioner(self, meta: Params) -> Callable[[Params], Params] | None:
        """A transform of the inner gradient (None: the identity)."""
        return None

    def before_outer_step(self) -> None:
        """Called with the meta-gradients in ``.grad``, before the outer optimizer steps (Adam-HD's hook)."""

    def after_step_parameters(self, meta: Params) -> Sequence[Params]:
        """Non-adapting parameters that replace the network's after each inner step (MAML++'s BNWB; none here)."""
        return ()

    def inner_weight_decay(self, meta: Params) -> LearningRate | None:
        """L2 weight decay of the inner loop (None: none)."""
        return None

    def loss_inputs(self) -> dict[str, Tensor]:
        """Tensors the meta-loss needs besides the meta-parameters and the batch (MAML++'s step weights)."""
        return {}

    def meta_loss(self, batch: TaskBatch, meta: Params | None = None, inputs: dict[str, Tensor] | None = None) -> Tensor:
        """Mean query loss after adaptation, differentiable with respect to the meta-parameters."""
        meta = self.meta_parameters() if meta is None else meta
        return adapted_query_losses(self.loss, self.network(meta), batch, self.inner_loop(meta)).mean()

    def meta_gradient(self, meta: Params, batch: TaskBatch, inputs: dict[str, Tensor]) -> tuple[Params, Tensor]:
        """``(d meta_loss / d meta, meta_loss)`` as a pure function (what ``compile`` compiles)."""
        return torch.func.grad_and_value(lambda m: self.meta_loss(batch, m, inputs))(meta)

    # -- shared machinery -----------------------------------------------------------
    def steps(self, steps: int | None = None) -> int:
        """Inner steps: ``steps`` if given, else as trained."""
        return self.hparams["inner_steps"] if steps is None else steps

    def test_steps(self, steps: int | None = None) -> int:
        """Inner steps when adapting to a new task: ``steps`` if given, else ``test_steps``."""
        return self.hparams["test_steps"] if steps is None else steps

    def meta_parameters(self) -> dict[str, Tensor]:
        """Every tensor the outer loop learns: the network's parameters and the extras."""
        return {**self.params, **self.extras}

    def loops_tasks(self, first_order: bool = True) -> bool:
        """Whether this learner's meta-batches run as a loop over tasks (``task_mapping``; ``core.loops_tasks``).

        Only where a meta-gradient is taken: adapting without one (at test, many tasks, often many
        steps, as ``scratch`` does) is faster vmapped, and batch norm's first derivatives are right there.
        """
        if self.task_mapping != "auto":
            return self.task_mapping == "loop"
        return torch.is_grad_enabled() and loops_tasks(self.backbone, self.device, second_order=not first_order)

    def network(self, meta: Params) -> Params:
        """The network's parameters out of a meta-parameter dict."""
        return {name: meta[name] for name in self.params}

    def inner_loop(
        self, meta: Params | None = None, *, steps: int | None = None, first_order: bool | None = None
    ) -> InnerLoop:
        """This learner's inner loop, reading learned rates and preconditioners from ``meta``."""
        meta = self.meta_parameters() if meta is None else meta
        first_order = self.first_order if first_order is None else first_order
        return InnerLoop(
            lrs=self.inner_lrs(meta, steps),
            first_order=first_order,
            adapt=self.adapted_names(),
            precondition=self.preconditioner(meta),
            optimizer=self.inner_optimizer,
            weight_decay=self.inner_weight_decay(meta),
            after_step=self.after_step_parameters(meta),
            loop_tasks=self.loops_tasks(first_order),
        )

    def fine_tune_loop(self) -> InnerLoop | None:
        """Task-aware fine-tuning after adaptation (``ft_steps`` Adam steps at ``ft_lr``), or None."""
        steps = self.hparams.get("ft_steps") or 0
        if not steps:
            return None
        adapt = head_names(self.backbone) if self.hparams["ft_layers"] == "head" else None
        return InnerLoop(lrs=[self.hparams["ft_lr"]] * steps, first_order=True, adapt=adapt, optimizer=Adam())

    def adapt_batch(self, batch: TaskBatch, *, first_order: bool, steps: int | None = None) -> Params:
        """Per-task adapted parameters ``{name: [tasks, ...]}`` from the support sets."""
        inner = self.inner_loop(steps=steps, first_order=first_order)
        return adapt_batch(self.loss, self.params, batch.support_x, batch.support_y, inner)

    def eager_meta_gradient(self, meta: Params, batch: TaskBatch, inputs: dict[str, Tensor]) -> tuple[Params, Tensor]:
        """The meta-gradient by ordinary backpropagation (faster than ``meta_gradient`` when not compiled).

        Where the tasks run as a loop, one task is differentiated at a time and the gradients
        summed (the meta-loss is a mean over tasks): memory then holds one task's graph, not
        the meta-batch's.
        """
        if batch.num_tasks == 1 or not self.inner_loop(meta).loop_tasks:
            loss = self.meta_loss(batch, meta, inputs)
            return dict(zip(meta, torch.autograd.grad(loss, list(meta.values())))), loss
        total, summed = torch.zeros((), device=self.device), None
        for t in range(batch.num_tasks):
            loss = self.meta_loss(batch.slice(t, t + 1), meta, inputs) / batch.num_tasks
            grads = torch.autograd.grad(loss, list(meta.values()))
            summed = list(grads) if summed is None else [a + b for a, b in zip(summed, grads)]
            total = total + loss.detach()
        return dict(zip(meta, summed)), total

    def compile(self) -> None:
        """Compile the meta-gradient with ``torch.compile`` (one graph per batch shape and schedule phase).

        Pays a compile of tens of seconds on the first step; worth it for long runs only.
        """
        self.compiled = torch.compile(self._meta_gradient_of_tensors, dynamic=False)

    def _meta_gradient_of_tensors(
        self, meta: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, inputs: dict[str, Tensor]
    ) -> tuple[Params, Tensor]:
        return self.meta_gradient(meta, TaskBatch(sx, sy, qx, qy), inputs)

    def meta_step(self, batch: TaskBatch) -> dict[str, Tensor]:
        """One outer optimizer step on the meta-gradient of ``batch``."""
        meta, inputs = self.meta_parameters(), self.loss_inputs()
        if self.compiled is not None:
            grads, loss = self.compiled(detach(meta), batch.support_x, batch.support_y, batch.query_x, batch.query_y, inputs)
        else:
            grads, loss = self.eager_meta_gradient(meta, batch, inputs)
        for name, p in meta.items():
            p.grad = grads[name]
        if math.isfinite(self.hparams["max_grad_norm"]):
            torch.nn.utils.clip_grad_norm_(list(meta.values()), self.hparams["max_grad_norm"])
        self.before_outer_step()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.iteration += 1
        return {"loss": loss.detach()}

    def predict(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Query predictions ``[tasks, queries, ...]`` after ``steps`` inner steps (default: ``test_steps``) and
        any task-aware fine-tuning (``ft_steps``)."""
        with torch.no_grad():
            inner = self.inner_loop(steps=self.test_steps(steps), first_order=True)
            adapted = adapt_batch(self.loss, detach(self.params), batch.support_x, batch.support_y, inner,
                                  then=self.fine_tune_loop())
            return batched_forward(self.backbone, adapted, batch.query_x, loop=inner.loop_tasks)

    def evaluate(self, batch: TaskBatch, steps: int | None = None) -> dict[str, Tensor]:
        """Per-task query loss (and accuracy) after adaptation, and the query loss before it (``loss_before``)."""
        metrics = super().evaluate(batch, steps)
        with torch.no_grad():
            params = detach(self.params)
            metrics["loss_before"] = batched_loss(self.loss, params, batch.query_x, batch.query_y, params_batched=False,
                                                  loop=self.loops_tasks())
        return metrics

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> AdaptedModel:
        """Fine-tune a copy of the meta-parameters on one task's support set (``steps``: default ``test_steps``)."""
        device = self.device
        with torch.no_grad():
            inner = self.inner_loop(steps=self.test_steps(steps), first_order=True)
            support_x, support_y = support_x.to(device), support_y.to(device)
            adapted = inner.run(self.loss, detach(self.params), support_x, support_y)
            fine_tune = self.fine_tune_loop()
            if fine_tune is not None:
                adapted = fine_tune.run(self.loss, adapted, support_x, support_y)
        return AdaptedModel(self.backbone, adapted)


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
