"""What every gradient-based learner shares: meta-parameters, the inner loop it composes, adaptation and evaluation.

A subclass says only what differs: which parameters adapt (``adapted_names``), the
values of each inner step (``inner_schedule``: learning rates, per-step parameters),
the chain of gradient transforms of the inner loop (``inner_transform``: the
optimizer, a preconditioner), any extra learned tensors (``make_extras``) and which
losses the outer step sums (``meta_loss``). These read the meta-parameters from the
``meta`` dict they are given, never from ``self``, so the whole meta-gradient is a
pure function that ``torch.compile`` can take whole. A learner that wraps this one (the
hypergradient learner) edits its inner loop through ``inner_edits``; the outer step
(optimizer, clipping, schedule) is the learner's ``OuterStep``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metaopt.learners.base import POSITIVE_FLOAT, HParam, MetaLearner
from metaopt.learners.core import (
    InnerLoop,
    Params,
    Step,
    adapt_batch,
    adapted_query_losses,
    batched_forward,
    detach,
    loops_tasks,
    make_loss,
    task_by_task_gradient,
)
from metaopt.learners.outer import OUTER_HPARAMS, OuterStep, Schedule
from metaopt.learners.transforms import INNER_OPTIMIZERS, Adam, GradientTransform
from metaopt.tasks.base import TaskBatch, TaskKind

GRADIENT_HPARAMS: dict[str, HParam] = {
    "inner_lr": HParam(default=0.01, help="inner-loop step size", **POSITIVE_FLOAT),
    "inner_steps": HParam(type=int, default=1, minimum=1, help="inner-loop steps per task"),
    "test_steps": HParam(type=int, default=None, minimum=1, help="inner steps when adapting at test (default: inner_steps)"),
    "inner_optimizer": HParam(type=str, default="sgd", choices=tuple(INNER_OPTIMIZERS), help="differentiable inner optimizer"),
    **OUTER_HPARAMS,
    "meta_batch": HParam(type=int, default=25, minimum=1, help="tasks per meta-batch"),
    # Task-aware fine-tuning: at test, after the learner's own adaptation, more steps on the support set.
    "ft_steps": HParam(type=int, default=0, minimum=0, help="task-aware fine-tuning: Adam steps on the support set "
                       "after adaptation, at test only (0: none)"),
    "ft_lr": HParam(default=0.001, help="task-aware fine-tuning step size", **POSITIVE_FLOAT),
    "ft_layers": HParam(type=str, default="all", choices=("all", "head"), help="what task-aware fine-tuning trains"),
}

# An edit of a learner's inner loop by a learner that wraps it: (loop, meta-parameters) -> loop.
InnerEdit = Callable[[InnerLoop, Params], InnerLoop]

# Float hyperparameters a compiled meta-gradient takes as tensor inputs, not as constants of its graph: trials
# that differ only in them share one graph, so the persistent inductor cache compiles it once per machine.
TRACED_HPARAMS = ("inner_lr",)
OUTSIDE_THE_GRAPH = (*OUTER_HPARAMS, "test_steps", "ft_steps", "ft_lr", "ft_layers")  # never in the meta-gradient
HPARAM_INPUT = "hparam:"  # their keys among the meta-gradient's inputs (and, for the inner loop, beside ``meta``)


def with_traced(meta: Params, inputs: Mapping[str, Tensor] | None) -> Params:
    """``meta`` and any traced hyperparameters among ``inputs``: what the inner loop reads them from."""
    traced = {k: v for k, v in (inputs or {}).items() if k.startswith(HPARAM_INPUT)}
    return {**meta, **traced} if traced else meta


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
    compilable: ClassVar[bool] = True
    first_order: ClassVar[bool] = False
    outer_optimizer: ClassVar[str] = "adam"  # of the outer step (Reptile: plain SGD)
    # How a meta-batch's tasks are mapped: "auto" (a loop for convolutions on the CPU, else vmap), "vmap", "loop".
    task_mapping: str = "auto"

    def __init__(
        self,
        backbone: nn.Module,
        hparams: Mapping[str, Any] | None = None,
        *,
        task_kind: TaskKind,
        max_iterations: int | None = None,
        n_way: int | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__(backbone, hparams, task_kind=task_kind, max_iterations=max_iterations, n_way=n_way)
        self.params: Params = dict(backbone.named_parameters())
        self.extras: dict[str, nn.Parameter] = self.make_extras()
        self.loss = make_loss(backbone, task_kind)
        self.inner_edits: list[InnerEdit] = []
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

    def make_outer_step(self) -> OuterStep:
        """``outer_optimizer`` over every meta-parameter at ``outer_lr``, clipped to ``max_grad_norm``, on its schedule."""
        if not self.trains:
            return super().make_outer_step()
        return OuterStep(self.meta_parameters(), lr=self.hparams["outer_lr"], optimizer=self.outer_optimizer,
                         max_grad_norm=self.hparams["max_grad_norm"], schedule=self.outer_schedule())

    def outer_schedule(self) -> Schedule | None:
        """The outer learning-rate schedule over the budget (``outer_schedule``; None: constant)."""
        return Schedule.of(self.hparams.get("outer_schedule", "constant"), self.max_iterations,
                           self.hparams.get("min_outer_lr", 0.0))

    def adapted_names(self) -> frozenset[str] | None:
        """Parameters the inner loop adapts (None: all of them)."""
        return None

    def inner_schedule(self, meta: Params, steps: int | None = None) -> Sequence[Step]:
        """Each inner step's values: ``inner_lr`` at every step."""
        return [Step(self.traced(meta, "inner_lr"))] * self.steps(steps)

    def traced(self, meta: Params, name: str) -> float | Tensor:
        """Hyperparameter ``name``: the tensor a compiled meta-gradient was given for it in ``meta`` (see
        ``TRACED_HPARAMS``), else its value."""
        return meta.get(HPARAM_INPUT + name, self.hparams[name])

    def traced_inputs(self) -> dict[str, Tensor]:
        """The ``TRACED_HPARAMS`` this learner has, as 0-d tensors for a compiled meta-gradient's inputs."""
        return {HPARAM_INPUT + name: torch.tensor(float(self.hparams[name]), device=self.device)
                for name in TRACED_HPARAMS if isinstance(self.hparams.get(name), (int, float))}

    def inner_transform(self, meta: Params) -> GradientTransform:
        """The inner loop's chain of gradient transforms: the ``inner_optimizer``."""
        return INNER_OPTIMIZERS[self.hparams.get("inner_optimizer", "sgd")]()

    def loss_inputs(self) -> dict[str, Tensor]:
        """Tensors the meta-loss needs besides the meta-parameters and the batch (MAML++'s step weights)."""
        return {}

    def meta_loss(self, batch: TaskBatch, meta: Params | None = None, inputs: dict[str, Tensor] | None = None) -> Tensor:
        """Mean query loss after adaptation, differentiable with respect to the meta-parameters."""
        meta = self.meta_parameters() if meta is None else meta
        return adapted_query_losses(self.loss, self.network(meta), batch, self.inner_loop(with_traced(meta, inputs))).mean()

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
        """This learner's inner loop, reading learned rates and transforms from ``meta`` (then any wrapper's edits)."""
        meta = self.meta_parameters() if meta is None else meta
        first_order = self.first_order if first_order is None else first_order
        loop = InnerLoop(steps=self.inner_schedule(meta, steps), transform=self.inner_transform(meta),
                         first_order=first_order, adapt=self.adapted_names(), loop_tasks=self.loops_tasks(first_order))
        for edit in self.inner_edits:
            loop = edit(loop, meta)
        return loop

    def fine_tune_loop(self) -> InnerLoop | None:
        """Task-aware fine-tuning after adaptation (``ft_steps`` Adam steps at ``ft_lr``), or None."""
        steps = self.hparams.get("ft_steps") or 0
        if not steps:
            return None
        adapt = head_names(self.backbone) if self.hparams["ft_layers"] == "head" else None
        return InnerLoop.repeat(self.hparams["ft_lr"], steps, first_order=True, adapt=adapt, transform=Adam())

    def adapt_batch(self, batch: TaskBatch, *, first_order: bool, steps: int | None = None) -> Params:
        """Per-task adapted parameters ``{name: [tasks, ...]}`` from the support sets."""
        inner = self.inner_loop(steps=steps, first_order=first_order)
        return adapt_batch(self.loss, self.params, batch.support_x, batch.support_y, inner)

    def eager_meta_gradient(self, meta: Params, batch: TaskBatch, inputs: dict[str, Tensor]) -> tuple[Params, Tensor]:
        """The meta-gradient by ordinary backpropagation (faster than ``meta_gradient`` when not compiled).

        Where the tasks run as a loop, one task is differentiated at a time (``task_by_task_gradient``):
        memory then holds one task's graph, not the meta-batch's.
        """
        if batch.num_tasks == 1 or not self.inner_loop(meta).loop_tasks:
            loss = self.meta_loss(batch, meta, inputs)
            return dict(zip(meta, torch.autograd.grad(loss, list(meta.values())))), loss
        return task_by_task_gradient(lambda one: self.meta_loss(one, meta, inputs), batch, meta)  # type: ignore[return-value]

    def compile(self) -> None:
        """Compile the meta-gradient with ``torch.compile`` (one graph per batch shape and schedule phase).

        Pays a compile of tens of seconds on the first step; worth it for long runs only.
        """
        self.compiled = torch.compile(self._meta_gradient_of_tensors, dynamic=False)

    def compile_signature(self, batch: Any) -> str | None:
        """A hash of what the compiled meta-gradient's graph depends on: the learner, the network, the hyperparameters
        it reads as constants (not the traced ones, not the outer loop's), the batch's shapes and types, torch."""
        shapes = [(tuple(t.shape), str(t.dtype)) for t in vars(batch).values() if isinstance(t, Tensor)]
        constants = {k: v for k, v in self.hparams.items() if k not in TRACED_HPARAMS and k not in OUTSIDE_THE_GRAPH}
        text = json.dumps([type(self).__name__, str(self.backbone), constants, shapes, torch.__version__,
                           str(self.device)], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def _meta_gradient_of_tensors(
        self, meta: Params, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor, inputs: dict[str, Tensor]
    ) -> tuple[Params, Tensor]:
        return self.meta_gradient(meta, TaskBatch(sx, sy, qx, qy), inputs)

    def meta_step(self, batch: TaskBatch) -> dict[str, Tensor]:
        """One outer step on the meta-gradient of ``batch``."""
        meta, inputs = self.meta_parameters(), self.loss_inputs()
        if self.compiled is not None:  # its hyperparameters as inputs: one graph (one cache entry) for every value
            grads, loss = self.compiled(detach(meta), batch.support_x, batch.support_y, batch.query_x, batch.query_y,
                                        {**inputs, **self.traced_inputs()})
        else:
            grads, loss = self.eager_meta_gradient(meta, batch, inputs)
        self.outer.step(grads=grads)
        return {"loss": loss.detach()}

    def predict(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Query predictions ``[tasks, queries, ...]`` after ``steps`` inner steps (default: ``test_steps``) and
        any task-aware fine-tuning (``ft_steps``)."""
        with torch.no_grad():
            inner = self.inner_loop(steps=self.test_steps(steps), first_order=True)
            adapted = adapt_batch(self.loss, detach(self.params), batch.support_x, batch.support_y, inner,
                                  then=self.fine_tune_loop())
            return batched_forward(self.backbone, adapted, batch.query_x, loop=inner.loop_tasks)

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
