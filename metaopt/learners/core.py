"""The functional core every gradient-based learner is built on.

Parameters are a dict of tensors, the network is ``functional_call(model, params, x)``,
and the inner loop is a pure function of (params, per-step learning rates, support
set). ``torch.func.vmap`` runs it over the tasks of a meta-batch, so there is no
Python loop over tasks; second-order meta-gradients come from differentiating
through ``torch.func.grad`` with ordinary autograd, and first order is the same
loop with the inner gradient taken at detached parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils import _pytree as pytree

from metaopt.learners.core_types import LearningRate, LossFn, Params
from metaopt.learners.transforms import SGD, GradientTransform
from metaopt.tasks.base import TaskBatch, TaskKind

def policy_gradient_loss(logits: Tensor, taken: Tensor) -> Tensor:
    """REINFORCE's surrogate ``-mean(log pi(a|s) * advantage)``; ``taken [..., 2]`` holds (action, advantage)."""
    logp = torch.log_softmax(logits, -1).gather(-1, taken[..., :1].long()).squeeze(-1)
    return -(logp * taken[..., 1]).mean()


def rating_loss(predictions: Tensor, ratings: Tensor) -> Tensor:
    """Mean squared error over the targets that are not ``NaN`` (a padded support set's missing ratings)."""
    known = ~torch.isnan(ratings)
    squared = torch.where(known, predictions - torch.nan_to_num(ratings), torch.zeros_like(predictions)) ** 2
    return squared.sum() / known.sum().clamp(min=1)


TASK_LOSSES: dict[TaskKind, Callable[[Tensor, Tensor], Tensor]] = {
    "regression": F.mse_loss,
    "classification": F.cross_entropy,
    "rating": rating_loss,  # regression whose padded support targets are NaN
    "rl": policy_gradient_loss,  # y: the (action, advantage) of each step the policy took
}


def has_tied_tensors(model: nn.Module) -> bool:
    """Whether ``model`` holds one parameter or buffer under two names (a tied embedding and head)."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return len({id(t) for _, t in named}) < len(named)


def run_with(model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], *args: Any,
             tied: bool = True) -> Any:
    """``model(*args)`` with ``params`` and ``buffers`` in place of its own (``functional_call``); ``tied=False`` where
    ``model`` ties no tensors (``has_tied_tensors``) skips the search for tied names each call does (a walk over every
    module, 1.5 ms a Conv-4 MAML step)."""
    return functional_call(model, (params, buffers), args, tie_weights=tied)


def make_loss(model: nn.Module, task_kind: TaskKind) -> LossFn:
    """``loss(params, x, y)`` of ``model`` for one task, as a pure function of ``params``."""
    criterion = TASK_LOSSES[task_kind]
    buffers = dict(model.named_buffers())
    tied = has_tied_tensors(model)

    def loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
        return criterion(run_with(model, params, buffers, x, tied=tied), y)

    return loss


def detach(params: Params) -> Params:
    """The same values with no autograd history."""
    return {name: p.detach() for name, p in params.items()}


def sgd_step(params: Params, grads: Params, lr: LearningRate) -> Params:
    """``p - lr * g`` for every parameter; ``lr`` is a scalar or a per-parameter dict."""
    if isinstance(lr, Mapping):
        return {name: p - lr[name] * grads[name] for name, p in params.items()}
    if isinstance(lr, (int, float)) and not torch._C._are_functorch_transforms_active():
        # one operation (and one autograd node) for every parameter: a third of the per-tensor ops' cost, both ways
        return dict(zip(params, torch._foreach_add(list(params.values()), [grads[k] for k in params], alpha=-lr)))
    return {name: p - lr * grads[name] for name, p in params.items()}


def map_tasks(fn: Callable[..., object], *args: object, loop: bool = False,
              in_dims: tuple[int | None, ...] | None = None) -> object:
    """``fn`` over the leading (task) dimension of ``args``: ``vmap``, or a loop whose results are stacked.

    ``vmap`` wins where per-op overhead dominates (an MLP); a loop wins for convolutions on
    the CPU, where per-task weights make ``vmap`` run grouped convolutions and copy for
    batch norm and max-pool (``benchmarks/image_throughput.py``). ``in_dims``: ``None``
    for an argument shared by every task.
    """
    dims = in_dims or (0,) * len(args)
    if not loop:
        return vmap(fn, in_dims=dims)(*args)
    count = next(pytree.tree_leaves(a)[0].shape[0] for a, d in zip(args, dims) if d is not None)
    pick = lambda a, d, i: a if d is None else pytree.tree_map(lambda t: t[i], a)  # noqa: E731
    outs = [fn(*(pick(a, d, i) for a, d in zip(args, dims))) for i in range(count)]
    return pytree.tree_map(lambda *xs: torch.stack(xs), outs[0], *outs[1:])


@dataclass(frozen=True)
class Step:
    """One inner step's values: its learning rate, and what it sets.

    ``then``: non-adapting parameters that take these values after this step, in the next
    step's forward and in the result (MAML++'s per-step batch-norm weights); None: none.
    """

    lr: LearningRate
    then: Params | None = None


@dataclass(frozen=True)
class InnerLoop:
    """How one task adapts: its steps' values, which parameters move, and the chain of gradient transforms.

    ``len(steps)`` steps of ``p - lr * transform(grad)``. Second order by default: the
    result is differentiable with respect to the parameters, tensor learning rates,
    learned transforms (a decay, a preconditioner) and optimizer state through the inner
    gradients; ``first_order`` treats the inner gradients as constants.
    """

    steps: Sequence[Step]
    transform: GradientTransform = SGD()
    first_order: bool = False
    adapt: frozenset[str] | None = None  # None: every parameter adapts (ANIL: only the head)
    loop_tasks: bool = False  # a meta-batch's tasks one after another instead of vmapped (``map_tasks``)

    @classmethod
    def repeat(cls, lr: LearningRate, steps: int, **options: Any) -> InnerLoop:
        """``steps`` steps at one learning rate."""
        return cls(steps=[Step(lr)] * steps, **options)

    @property
    def lrs(self) -> list[LearningRate]:
        """Each step's learning rate."""
        return [step.lr for step in self.steps]

    def trajectory(self, loss: LossFn, params: Params, x: Tensor, y: Tensor) -> list[Params]:
        """The full parameters after each inner step on ``(x, y)``."""
        return self._loop(loss, params, x, y, keep_all=True)

    def run(self, loss: LossFn, params: Params, x: Tensor, y: Tensor) -> Params:
        """The adapted parameters (after the last step); a long loop keeps only the latest step's."""
        return self._loop(loss, params, x, y, keep_all=False)[-1] if self.steps else dict(params)

    def _loop(self, loss: LossFn, params: Params, x: Tensor, y: Tensor, *, keep_all: bool) -> list[Params]:
        fixed = {} if self.adapt is None else {k: v for k, v in params.items() if k not in self.adapt}
        fast = dict(params) if self.adapt is None else {k: params[k] for k in self.adapt}
        grad_fn = grad(lambda f, c, xs, ys: loss({**c, **f}, xs, ys))
        state = self.transform.init(fast)
        out: list[Params] = []
        for t, step in enumerate(self.steps):
            grads = (self._autograd_gradient(loss, fast, fixed, x, y) if self._plain_autograd(fast)
                     else grad_fn(detach(fast) if self.first_order else fast, fixed, x, y))
            direction, state = self.transform.update(grads, state, fast, t)
            fast = sgd_step(fast, direction, step.lr)
            if step.then:
                fixed = {**fixed, **step.then}
            if keep_all or t == len(self.steps) - 1:
                out.append({**fixed, **fast})
        return out

    def _plain_autograd(self, fast: Params) -> bool:
        """Whether this step's gradient can be ordinary autograd's: one task at a time (the CPU loop), gradients on,
        no ``torch.func`` transform or ``torch.compile`` tracing around it, and (second order) every adapted tensor
        in the graph. Same numbers as ``torch.func.grad``, without its per-call wrapping of a custom autograd function
        (the fused Conv-4 block: 6% of a second-order Conv-4 step)."""
        if not self.loop_tasks or not torch.is_grad_enabled() or torch.compiler.is_compiling():
            return False
        if torch._C._functorch.maybe_current_level() is not None:
            return False
        return self.first_order or all(v.requires_grad for v in fast.values())

    def _autograd_gradient(self, loss: LossFn, fast: Params, fixed: Params, x: Tensor, y: Tensor) -> Params:
        """``d loss / d fast`` by ``torch.autograd.grad`` (a graph for the outer step unless first order)."""
        at = {k: v.detach().requires_grad_() for k, v in fast.items()} if self.first_order else fast
        values = torch.autograd.grad(loss({**fixed, **at}, x, y), list(at.values()),
                                     create_graph=not self.first_order, materialize_grads=True)
        return dict(zip(at, values))


def adapt_batch(loss: LossFn, params: Params, support_x: Tensor, support_y: Tensor, inner: InnerLoop, *,
                then: InnerLoop | None = None) -> Params:
    """``inner`` (then ``then``, from where it ended) over every task of a batch at once; results lead with tasks."""

    def one_task(x: Tensor, y: Tensor) -> Params:
        adapted = inner.run(loss, params, x, y)
        return adapted if then is None else then.run(loss, adapted, x, y)

    return map_tasks(one_task, support_x, support_y, loop=inner.loop_tasks)


def adapted_query_losses(
    loss: LossFn, params: Params, batch: TaskBatch, inner: InnerLoop, *, every_step: bool = False
) -> Tensor:
    """Query losses after adapting on each support set, in one vmapped pass.

    ``[tasks]`` after the last step, or ``[tasks, steps]`` after every step (MAML++'s multi-step loss).
    """

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        if every_step:
            return torch.stack([loss(p, qx, qy) for p in inner.trajectory(loss, params, sx, sy)])
        return loss(inner.run(loss, params, sx, sy), qx, qy)

    return map_tasks(one_task, batch.support_x, batch.support_y, batch.query_x, batch.query_y, loop=inner.loop_tasks)


def batched_loss(loss: LossFn, params: Params, x: Tensor, y: Tensor, *, params_batched: bool = True,
                 loop: bool = False) -> Tensor:
    """Per-task losses ``[tasks]`` of per-task (or shared) ``params`` on ``x [tasks, n, ...]``."""
    return map_tasks(loss, params, x, y, loop=loop, in_dims=(0 if params_batched else None, 0, 0))


def batched_forward(model: nn.Module, params: Params, x: Tensor, *, loop: bool = False) -> Tensor:
    """Per-task outputs ``[tasks, n, ...]`` of per-task ``params`` on ``x [tasks, n, ...]``."""
    buffers, tied = dict(model.named_buffers()), has_tied_tensors(model)
    return map_tasks(lambda p, xi: run_with(model, p, buffers, xi, tied=tied), params, x, loop=loop)


def task_by_task_gradient(loss_of: Callable[[TaskBatch], Tensor], batch: TaskBatch,
                          params: Params) -> tuple[dict[str, Tensor | None], Tensor]:
    """The gradient of the batch's mean loss, ``loss_of`` one task at a time, and that mean loss.

    The mean over tasks is the mean of the tasks' losses, so each task is differentiated on
    its own and the gradients summed: memory holds one task's graph, not the meta-batch's.
    A parameter no loss reaches gets None (as ``.grad`` would be).
    """
    total = torch.zeros((), device=next(iter(params.values())).device)
    summed: list[Tensor | None] | None = None
    for t in range(batch.num_tasks):
        loss = loss_of(batch.slice(t, t + 1)) / batch.num_tasks
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        if summed is None:
            summed = list(grads)
        elif all(a is not None and b is not None for a, b in zip(summed, grads)):
            summed = list(torch._foreach_add(summed, grads))  # one operation for every parameter
        else:
            summed = [b if a is None else a if b is None else a + b for a, b in zip(summed, grads)]
        total = total + loss.detach()
    return dict(zip(params, summed or [])), total


def loops_tasks(model: nn.Module, device: torch.device, *, second_order: bool = False) -> bool:
    """Whether a meta-batch of ``model`` must run as a loop over tasks rather than vmapped.

    For speed, convolutions on the CPU. For correctness, batch norm under a second-order
    meta-gradient: vmap's batching rule of the batch-norm backward gives wrong double-backward
    gradients (pytorch/functorch#534, open; ``tests/learners/test_gradient_learners.py``).
    """
    modules = list(model.modules())
    if second_order and any(isinstance(m, nn.modules.batchnorm._NormBase) for m in modules):
        return True
    return device.type == "cpu" and any(isinstance(m, nn.modules.conv._ConvNd) for m in modules)
