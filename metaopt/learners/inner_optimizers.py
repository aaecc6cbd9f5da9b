"""Differentiable inner-loop optimizers, as pure functions of (gradients, state, step).

Each returns a *direction*; the inner loop applies ``p - lr * direction``, so a
learned per-parameter or per-step learning rate (Meta-SGD, MAML++) scales any of
them. Every operation is an ordinary differentiable tensor op, so second-order
meta-gradients flow through momentum buffers and Adam moments (what the seed
used ``higher``'s differentiable optimizers for).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from metaopt.learners.core_types import Params


@dataclass(frozen=True)
class SGD:
    """Plain gradient descent: direction = g."""

    def init(self, params: Params) -> Any:
        """No state."""
        return None

    def update(self, grads: Params, state: Any, step: int) -> tuple[Params, Any]:
        """The gradient itself."""
        return grads, None


@dataclass(frozen=True)
class Momentum:
    """Heavy-ball momentum: v = mu * v + g; direction = v."""

    momentum: float = 0.9

    def init(self, params: Params) -> Params:
        """Zero velocity."""
        return {k: torch.zeros_like(p) for k, p in params.items()}

    def update(self, grads: Params, state: Params, step: int) -> tuple[Params, Params]:
        """Accumulate velocity."""
        velocity = {k: self.momentum * state[k] + g for k, g in grads.items()}
        return velocity, velocity


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba 2015) with bias correction: direction = m_hat / sqrt(v_hat + eps^2).

    ``sqrt(v_hat + eps^2)`` instead of ``sqrt(v_hat) + eps``: the same step to within
    eps, but differentiable where a gradient entry is exactly zero (a dead ReLU),
    where d sqrt(v)/dv is infinite and the second-order meta-gradient would be NaN.
    """

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def init(self, params: Params) -> tuple[Params, Params]:
        """Zero first and second moments."""
        return {k: torch.zeros_like(p) for k, p in params.items()}, {k: torch.zeros_like(p) for k, p in params.items()}

    def update(self, grads: Params, state: tuple[Params, Params], step: int) -> tuple[Params, tuple[Params, Params]]:
        """Bias-corrected moment ratio."""
        m_prev, v_prev = state
        m = {k: self.beta1 * m_prev[k] + (1 - self.beta1) * g for k, g in grads.items()}
        v = {k: self.beta2 * v_prev[k] + (1 - self.beta2) * g * g for k, g in grads.items()}
        c1, c2 = 1 - self.beta1 ** (step + 1), 1 - self.beta2 ** (step + 1)
        direction = {k: (m[k] / c1) / torch.sqrt(v[k] / c2 + self.eps**2) for k in grads}
        return direction, (m, v)


InnerOptimizer = SGD | Momentum | Adam
INNER_OPTIMIZERS: dict[str, type] = {"sgd": SGD, "momentum": Momentum, "adam": Adam}
