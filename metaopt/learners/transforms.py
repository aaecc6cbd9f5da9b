"""The inner loop's gradient transforms, optax-style: pure functions of (gradients, state, parameters, step).

A transform maps the inner gradient to a *direction*; ``chain`` composes them left
to right, and the inner loop applies ``p - lr * direction``, so a learned
per-parameter or per-step learning rate (Meta-SGD, MAML++) scales any of them. The
optimizers (SGD, momentum, Adam) end a chain; before them, L2 weight decay (the
hypergradient learner's, learnable) and a preconditioner (Meta-Curvature's) change the
gradient. Every operation is an ordinary differentiable tensor op, so second-order
meta-gradients flow through momentum buffers, Adam moments, a learned decay or a
learned preconditioner (what the seed used ``higher``'s differentiable optimizers for).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from metaopt.learners.core_types import LearningRate, Params


class GradientTransform(Protocol):
    """One link of an inner loop's chain: gradients in, transformed gradients out, with its own state."""

    def init(self, params: Params) -> Any:
        """The state before the first step."""

    def update(self, grads: Params, state: Any, params: Params, step: int) -> tuple[Params, Any]:
        """The transformed gradients of step ``step`` (from 0) at ``params``, and the next state."""


@dataclass(frozen=True)
class SGD:
    """Plain gradient descent: direction = g."""

    def init(self, params: Params) -> Any:
        """No state."""
        return None

    def update(self, grads: Params, state: Any, params: Params, step: int) -> tuple[Params, Any]:
        """The gradient itself."""
        return grads, None


@dataclass(frozen=True)
class Momentum:
    """Heavy-ball momentum: v = mu * v + g; direction = v."""

    momentum: float = 0.9

    def init(self, params: Params) -> Params:
        """Zero velocity."""
        return {k: torch.zeros_like(p) for k, p in params.items()}

    def update(self, grads: Params, state: Params, params: Params, step: int) -> tuple[Params, Params]:
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

    def update(self, grads: Params, state: tuple[Params, Params], params: Params,
               step: int) -> tuple[Params, tuple[Params, Params]]:
        """Bias-corrected moment ratio."""
        m_prev, v_prev = state
        m = {k: self.beta1 * m_prev[k] + (1 - self.beta1) * g for k, g in grads.items()}
        v = {k: self.beta2 * v_prev[k] + (1 - self.beta2) * g * g for k, g in grads.items()}
        c1, c2 = 1 - self.beta1 ** (step + 1), 1 - self.beta2 ** (step + 1)
        direction = {k: (m[k] / c1) / torch.sqrt(v[k] / c2 + self.eps**2) for k in grads}
        return direction, (m, v)


@dataclass(frozen=True)
class WeightDecay:
    """L2 weight decay: g + rate * p (``rate``: a scalar, a learnable tensor, or one per parameter by name)."""

    rate: LearningRate

    def init(self, params: Params) -> None:
        """No state."""
        return None

    def update(self, grads: Params, state: None, params: Params, step: int) -> tuple[Params, None]:
        """The decayed gradient."""
        rate = self.rate
        return {k: g + (rate[k] if isinstance(rate, Mapping) else rate) * params[k] for k, g in grads.items()}, None


@dataclass(frozen=True)
class Precondition:
    """A (learned) linear map of the gradient, M(g) (Meta-Curvature's preconditioner)."""

    apply: Callable[[Params], Params]

    def init(self, params: Params) -> None:
        """No state."""
        return None

    def update(self, grads: Params, state: None, params: Params, step: int) -> tuple[Params, None]:
        """M(g)."""
        return self.apply(grads), None


@dataclass(frozen=True)
class Chain:
    """Transforms applied left to right, each with its own state."""

    transforms: tuple[GradientTransform, ...]

    def init(self, params: Params) -> tuple[Any, ...]:
        """Every link's state."""
        return tuple(t.init(params) for t in self.transforms)

    def update(self, grads: Params, state: tuple[Any, ...], params: Params, step: int) -> tuple[Params, tuple[Any, ...]]:
        """The gradient through every link in turn."""
        states = []
        for transform, inner in zip(self.transforms, state):
            grads, inner = transform.update(grads, inner, params, step)
            states.append(inner)
        return grads, tuple(states)


def chain(*transforms: GradientTransform) -> GradientTransform:
    """``transforms`` applied left to right (a single one as itself)."""
    flat = tuple(part for t in transforms for part in (t.transforms if isinstance(t, Chain) else (t,)))
    return flat[0] if len(flat) == 1 else Chain(flat)


INNER_OPTIMIZERS: dict[str, type] = {"sgd": SGD, "momentum": Momentum, "adam": Adam}
