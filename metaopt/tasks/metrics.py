"""What a family scores a task by: per-task metrics of query predictions, each with a direction.

A family lists its metrics, the first one primary: the value Optuna optimises on
validation tasks, the pruners compare, the leaderboard ranks by and the champion
decision tests. Each metric maps predictions ``[tasks, queries, ...]`` and query
targets to one value per task.
"""

from __future__ import annotations

import math
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
    """A per-task score: its key in results (``val_<name>``, ``test_<name>``), direction, and how people see it.

    ``percent``: a rate in [0, 1] that every table, description and tag shows in percent;
    ``digits``: the significant digits a value is shown with otherwise (a CI gets two).
    """

    name: str
    direction: Direction
    label: str
    per_task: PerTask
    percent: bool = False
    digits: int = 4
    in_tables: bool = True  # False: recorded, not repeated in tables (the primary one shifted by a constant)

    @property
    def heading(self) -> str:
        """The label with its unit, for a column: ``accuracy %``, ``MSE``."""
        return f"{self.label} %" if self.percent else self.label

    def cell(self, value: float | None) -> str:
        """``value`` for a table column: fixed decimals (two of a percent), ``-`` when missing or not finite."""
        if value is None or not math.isfinite(value):
            return "-"
        return f"{100 * value:.2f}" if self.percent else f"{value:.{self.digits}f}"

    def cell_ci(self, mean: float | None, ci: float | None) -> str:
        """``mean ± ci`` for a table column (``-`` without a mean)."""
        return "-" if mean is None else f"{self.cell(mean)} ± {self.cell(ci or 0.0)}"

    def show(self, value: float | None) -> str:
        """``value`` in prose: ``97.12%``, ``0.1234``; ``-`` when missing or not finite."""
        if value is None or not math.isfinite(value):
            return "-"
        return f"{100 * value:.2f}%" if self.percent else f"{value:.{self.digits}g}"

    def show_ci(self, mean: float | None, ci: float | None) -> str:
        """``mean ± ci`` in prose: ``97.12 ± 0.34%``, ``0.1234 ± 0.012``; ``-`` without a mean."""
        if mean is None or not math.isfinite(mean):
            return "-"
        ci = ci if ci is not None and math.isfinite(ci) else 0.0
        if self.percent:
            return f"{100 * mean:.2f} ± {100 * ci:.2f}%"
        return f"{mean:.{self.digits}g} ± {ci:.2g}"

    def show_change(self, mean: float, ci: float) -> str:
        """A signed difference ``mean ± ci`` in prose: ``+1.20 ± 0.80 percentage points``, ``-0.0123 ± 0.004``."""
        if self.percent:
            return f"{100 * mean:+.2f} ± {100 * ci:.2f} percentage points"
        return f"{mean:+.{self.digits}g} ± {ci:.2g}"

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
    Metric("accuracy", "maximize", "accuracy", accuracy, percent=True),
    Metric("loss", "minimize", "cross-entropy", cross_entropy),
)
