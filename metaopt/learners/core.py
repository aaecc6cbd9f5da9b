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
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from metaopt.tasks.base import TaskBatch

Params = dict[str, Tensor]
# A step's learning rate: one scalar for every parameter, or one tensor per parameter.
LearningRate = Union[float, Tensor, Mapping[str, Tensor]]
LossFn = Callable[[Params, Tensor, Tensor], Tensor]

TASK_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "regression": F.mse_loss,
    "classification": F.cross_entropy,
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


def inner_loop(
    loss: LossFn,
    params: Params,
    x: Tensor,
    y: Tensor,
    lrs: Sequence[LearningRate],
    *,
    first_order: bool = False,
) -> Params:
    """Adapt ``params`` to one task by ``len(lrs)`` gradient steps on ``(x, y)``.

    Second order by default: the result is differentiable with respect to
    ``params`` and to tensor learning rates through the inner gradients. With
    ``first_order`` the inner gradients are treated as constants.
    """
    grad_fn = grad(loss)
    for lr in lrs:
        grads = grad_fn(detach(params) if first_order else params, x, y)
        params = sgd_step(params, grads, lr)
    return params


def adapt_batch(
    loss: LossFn,
    params: Params,
    support_x: Tensor,
    support_y: Tensor,
    lrs: Sequence[LearningRate],
    *,
    first_order: bool = False,
) -> Params:
    """``inner_loop`` over every task of a batch at once; each result has a leading task dimension."""

    def adapt_one(x: Tensor, y: Tensor) -> Params:
        return inner_loop(loss, params, x, y, lrs, first_order=first_order)

    return vmap(adapt_one)(support_x, support_y)


def adapted_query_losses(
    loss: LossFn,
    params: Params,
    batch: TaskBatch,
    lrs: Sequence[LearningRate],
    *,
    first_order: bool = False,
) -> Tensor:
    """Per-task query losses ``[tasks]`` after adapting on each support set, in one vmapped pass."""

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        return loss(inner_loop(loss, params, sx, sy, lrs, first_order=first_order), qx, qy)

    return vmap(one_task)(batch.support_x, batch.support_y, batch.query_x, batch.query_y)


def batched_loss(loss: LossFn, params: Params, x: Tensor, y: Tensor, *, params_batched: bool = True) -> Tensor:
    """Per-task losses ``[tasks]`` of per-task (or shared) ``params`` on ``x [tasks, n, ...]``."""
    return vmap(loss, in_dims=(0 if params_batched else None, 0, 0))(params, x, y)


def batched_forward(model: nn.Module, params: Params, x: Tensor) -> Tensor:
    """Per-task outputs ``[tasks, n, ...]`` of per-task ``params`` on ``x [tasks, n, ...]``."""
    buffers = dict(model.named_buffers())
    return vmap(lambda p, xi: functional_call(model, (p, buffers), (xi,)))(params, x)
