"""What a family scores a task by: per-task metrics of query predictions, each with a direction.

A family lists its metrics, the first one primary: the value Optuna optimises on
validation tasks, the pruners compare, the leaderboard ranks by and the champion
decision tests. Each metric maps predictions ``[tasks, queries, ...]`` and query
targets to one value per task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Direction = Literal["minimize", "maximize"]
PerTask = Callable[[Tensor, Tensor], Tensor]  # (predictions [tasks, queries, ...], targets) -> [tasks]


@dataclass(frozen=True)
class Metric:
    """A per-task score: its key in results (``val_<name>``, ``test_<name>``), direction and label for people."""

    name: str
    direction: Direction
    label: str
    per_task: PerTask

    @property
    def higher_is_better(self) -> bool:
        """True for metrics to maximise (accuracy, reward)."""
        return self.direction == "maximize"

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` beats ``b`` under this metric's direction."""
        return a > b if self.higher_is_better else a < b

    def best(self, values: list[float]) -> float:
        """The best of ``values``."""
        return max(values) if self.higher_is_better else min(values)


def mse(predictions: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error of each task's query predictions ``[tasks]``."""
    return torch.vmap(F.mse_loss)(predictions, targets)


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of each task's query logits ``[tasks, queries, ways]`` ``[tasks]``."""
    return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(-1)


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of each task's queries classified right ``[tasks]``."""
    return (logits.argmax(-1) == labels).float().mean(-1)


# Names stay "loss" and "accuracy" so that the records of every store (val_loss, test_loss, test_accuracy) read alike.
REGRESSION: tuple[Metric, ...] = (Metric("loss", "minimize", "MSE", mse),)
CLASSIFICATION: tuple[Metric, ...] = (
    Metric("accuracy", "maximize", "accuracy", accuracy),
    Metric("loss", "minimize", "cross-entropy", cross_entropy),
)
