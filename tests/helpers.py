"""Small problems shared by the tests."""

from __future__ import annotations

import torch

from metaopt.learners import LEARNERS
from metaopt.models import MLP
from metaopt.tasks import Sine, TaskBatch


def tiny_learner(method: str, hparams: dict | None = None, *, seed: int = 0, dtype=torch.float64):
    """A learner on a 1-4-4-1 tanh MLP (smooth, so finite differences are exact enough)."""
    torch.manual_seed(seed)
    net = MLP(in_features=1, out_features=1, hidden=(4, 4), activation="tanh").to(dtype)
    return LEARNERS[method](net, hparams or {}, task_kind="regression")


def scores(learner, batch: TaskBatch, family=None, steps: int | None = None) -> dict[str, torch.Tensor]:
    """Per-task scores of ``learner`` on ``batch`` as its family scores it (sine's MSE by default); ``steps=0``:
    before adapting."""
    return (family or Sine()).score_learner(learner, batch, steps)


def sine_batch(tasks: int = 3, *, shots: int = 5, queries: int = 5, seed: int = 0, dtype=torch.float64) -> TaskBatch:
    """A reproducible batch of sine tasks."""
    batch = Sine(shots=shots, queries=queries).sample(tasks, "train", torch.Generator().manual_seed(seed))
    return TaskBatch(*(t.to(dtype) for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y)))


def finite_difference_grad(fn, params: dict[str, torch.Tensor], eps: float = 1e-6) -> dict[str, torch.Tensor]:
    """Central differences of the scalar ``fn()`` with respect to every entry of ``params`` (perturbed in place)."""
    grads = {}
    with torch.no_grad():
        for name, p in params.items():
            g = torch.zeros_like(p)
            flat, gflat = p.view(-1), g.view(-1)
            for i in range(flat.numel()):
                orig = flat[i].item()
                flat[i] = orig + eps
                up = fn().item()
                flat[i] = orig - eps
                down = fn().item()
                flat[i] = orig
                gflat[i] = (up - down) / (2 * eps)
            grads[name] = g
    return grads


def relative_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """``||a - b|| / ||b||`` over all entries."""
    diff = torch.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in b))
    return (diff / torch.sqrt(sum((b[k] ** 2).sum() for k in b))).item()
