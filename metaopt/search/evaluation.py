"""Scoring a learner on many held-out tasks: per-task metrics, then mean and 95% confidence interval."""

from __future__ import annotations

import math

import torch

from metaopt.learners.base import MetaLearner
from metaopt.tasks.base import TaskBatch

# Held-out test tasks are the same for every search, method and seed.
TEST_SEED = 20170703
Z_95 = 1.959963984540054


def evaluate_tasks(learner: MetaLearner, batches: list[TaskBatch], steps: int | None = None) -> dict[str, torch.Tensor]:
    """Per-task metrics ``{name: [tasks]}`` over every batch."""
    parts = [learner.evaluate(batch.to(learner.device), steps) for batch in batches]
    return {name: torch.cat([p[name] for p in parts]).cpu() for name in parts[0]}


def mean_ci(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (normal approximation)."""
    values = values.double()
    n = values.numel()
    half = Z_95 * values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return values.mean().item(), half
