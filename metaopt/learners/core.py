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

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils import _pytree as pytree

from metaopt.learners.core_types import LearningRate, LossFn, Params
from metaopt.learners.inner_optimizers import SGD, InnerOptimizer
from metaopt.tasks.base import TaskBatch

def policy_gradient_loss(logits: Tensor, taken: Tensor) -> Tensor:
    """REINFORCE's surrogate ``-mean(log pi(a|s) * advantage)``; ``taken [..., 2]`` holds (action, advantage)."""
    logp = torch.log_softmax(logits, -1).gather(-1, taken[..., :1].long()).squeeze(-1)
    return -(logp * taken[..., 1]).mean()


def rating_loss(predictions: Tensor, ratings: Tensor) -> Tensor:
    """Mean squared error over the targets that are not ``NaN`` (a padded support set's missing ratings)."""
    known = ~torch.isnan(ratings)
    squared = torch.where(known, predictions - torch.nan_to_num(ratings), torch.zeros_like(predictions)) ** 2
    return squared.sum() / known.sum().clamp(min=1)


TASK_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "regression": F.mse_loss,
    "classification": F.cross_entropy,
    "rating": rating_loss,  # regression whose padded support targets are NaN
    "rl": policy_gradient_loss,  # y: the (action, advantage) of each step the policy took
}


def make_loss(model: nn.Module, task_kind: str) -> LossFn:
    """``loss(params, x, y)`` of ``model`` for one task, as a pure function of ``params``."""
    criterion = TASK_LOSSES[task_kind]
    buffers = dict(model.named_buffers())

    def loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
        return criterion(functional_call(model, (params, buffers), (x,)), y)

    return loss


def detach(params: Params) -> Params:
    """The same values with no autograd history."""
    return {name: p.detach() for name, p in params.items()}


def sgd_step(params: Params, grads: Params, lr: LearningRate) -> Params:
    """``p - lr * g`` for every parameter; ``lr`` is a scalar or a per-parameter dict."""
    if isinstance(lr, Mapping):
        return {name: p - lr[name] * grads[name] for name, p in params.items()}
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
class InnerLoop:
    """How one task adapts: the step sizes, which parameters move, the gradient transform, the optimizer.

    ``len(lrs)`` steps. Second order by default: the result is differentiable with
    respect to the parameters, tensor learning rates, preconditioner factors and
    optimizer state through the inner gradients; ``first_order`` treats the inner
    gradients as constants.
    """

    lrs: Sequence[LearningRate]
    first_order: bool = False
    adapt: frozenset[str] | None = None  # None: every parameter adapts (ANIL: only the head)
    precondition: Callable[[Params], Params] | None = None  # Meta-Curvature
    optimizer: InnerOptimizer = SGD()
    weight_decay: LearningRate | None = None  # L2 on the adapting parameters: grad + wd * p (a tensor is learnable)
    # MAML++'s per-step batch-norm weights: after step t the non-adapting parameters in after_step[t] (the
    # last entry for later steps) replace the network's, in the next step's forward and in the result.
    after_step: Sequence[Params] = ()
    loop_tasks: bool = False  # a meta-batch's tasks one after another instead of vmapped (``map_tasks``)

    def trajectory(self, loss: LossFn, params: Params, x: Tensor, y: Tensor) -> list[Params]:
        """The full parameters after each inner step on ``(x, y)``."""
        return self._loop(loss, params, x, y, keep_all=True)

    def run(self, loss: LossFn, params: Params, x: Tensor, y: Tensor) -> Params:
        """The adapted parameters (after the last step); a long loop keeps only the latest step's."""
        return self._loop(loss, params, x, y, keep_all=False)[-1] if self.lrs else dict(params)

    def _loop(self, loss: LossFn, params: Params, x: Tensor, y: Tensor, *, keep_all: bool) -> list[Params]:
        fixed = {} if self.adapt is None else {k: v for k, v in params.items() if k not in self.adapt}
        fast = dict(params) if self.adapt is None else {k: params[k] for k in self.adapt}
        grad_fn = grad(lambda f, c, xs, ys: loss({**c, **f}, xs, ys))
        state = self.optimizer.init(fast)
        steps: list[Params] = []
        for t, lr in enumerate(self.lrs):
            grads = grad_fn(detach(fast) if self.first_order else fast, fixed, x, y)
            if self.weight_decay is not None:
                wd = self.weight_decay
                grads = {k: g + (wd[k] if isinstance(wd, Mapping) else wd) * fast[k] for k, g in grads.items()}
            if self.precondition is not None:
                grads = self.precondition(grads)
            direction, state = self.optimizer.update(grads, state, t)
            fast = sgd_step(fast, direction, lr)
            if self.after_step:
                fixed = {**fixed, **self.after_step[min(t, len(self.after_step) - 1)]}
            if keep_all or t == len(self.lrs) - 1:
                steps.append({**fixed, **fast})
        return steps


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
    buffers = dict(model.named_buffers())
    return map_tasks(lambda p, xi: functional_call(model, (p, buffers), (xi,)), params, x, loop=loop)


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
