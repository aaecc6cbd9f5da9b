"""The task-family interface: every family yields a ``TaskBatch`` of stacked tensors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class TaskBatch:
    """One meta-batch: tensors stacked over tasks (dimension 0)."""

    support_x: torch.Tensor  # [tasks, shots, ...]
    support_y: torch.Tensor  # [tasks, shots, ...]
    query_x: torch.Tensor  # [tasks, queries, ...]
    query_y: torch.Tensor  # [tasks, queries, ...]

    @property
    def num_tasks(self) -> int:
        """Number of tasks in the batch."""
        return self.support_x.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        """Move every tensor to ``device``."""
        return TaskBatch(*(t.to(device) for t in (self.support_x, self.support_y, self.query_x, self.query_y)))

    def slice(self, start: int, stop: int) -> TaskBatch:
        """Tasks ``start:stop`` of the batch."""
        return TaskBatch(*(t[start:stop] for t in (self.support_x, self.support_y, self.query_x, self.query_y)))


class TaskFamily(ABC):
    """A distribution over tasks with disjoint train/val/test splits."""

    kind: ClassVar[Literal["regression", "classification", "rl"]]
    options: ClassVar[tuple[str, ...]] = ()  # what a job file may set (family.<option>)
    input_shape: tuple[int, ...]
    output_size: int
    n_way: int | None = None

    @abstractmethod
    def sample(self, batch_size: int, split: Split, generator: torch.Generator) -> TaskBatch:
        """Draw ``batch_size`` tasks of ``split``; deterministic given ``generator``."""

    def fixed_tasks(self, n_tasks: int, split: Split, seed: int, chunk: int = 100) -> list[TaskBatch]:
        """A fixed, reproducible set of ``n_tasks`` tasks of ``split`` in chunks (for evaluation)."""
        generator = torch.Generator().manual_seed(seed)
        sizes = [min(chunk, n_tasks - start) for start in range(0, n_tasks, chunk)]
        return [self.sample(size, split, generator) for size in sizes]
