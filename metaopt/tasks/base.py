"""The task-family contract: stacked ``TaskBatch`` tensors, options as a pydantic model, metrics, a key.

A family owns what only it knows: which options a job's ``family:`` block may set
(``Options``), how a task is scored (``metrics``, the first primary) and which
options change the task distribution (``key``: experiments, leaderboards and
champions are kept per key, so results of different settings never mix).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, get_args

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from metaopt.tasks.metrics import Metric

Split = Literal["train", "val", "test"]
# What a family's tasks ask of a learner: predict values, classes or ratings from a support set, or act (RL).
TaskKind = Literal["regression", "classification", "rating", "rl"]
TASK_KINDS: tuple[TaskKind, ...] = get_args(TaskKind)
SUPERVISED: tuple[TaskKind, ...] = ("regression", "classification", "rating")  # query targets from a support set
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


@dataclass(frozen=True)
class PooledBatch:
    """Examples pooled over the training tasks, for a learner trained as one ordinary network (``pretrain``).

    ``y`` holds global targets: for classification, class indices among ``classes`` (the
    family's pooled classes); ``classes`` is None where the task labels are already global or
    the targets are values (regression).
    """

    x: torch.Tensor  # [examples, ...]
    y: torch.Tensor  # [examples, ...]
    classes: int | None = None

    def to(self, device: torch.device | str) -> PooledBatch:
        """The batch on ``device``."""
        return PooledBatch(self.x.to(device), self.y.to(device), self.classes)


class DataWarning(UserWarning):
    """Something in a user's data was left out (too few examples, unreadable files); the search goes on."""


# A number of examples, classes or queries in one task: bounded, so a typo fails at validation instead of allocating
# terabytes in the first trial.
Count = Annotated[int, Field(gt=0, le=100_000)]
# What a frozen in-context model sees of a task: ``context`` of its labelled examples (its pool: the support set) for
# each query, chosen by a selector (``metaopt.incontext``); unset, the whole pool. A learner that adapts reads it all.
ContextBudget = Annotated[int | None, Field(default=None, gt=0, le=100_000, description=(
    "labelled examples an in-context model sees for each query, chosen from the task's pool (its support set) by a "
    "selector; unset: the whole pool"))]


def check_context(context: int | None, pool: int, pool_name: str) -> None:
    """``ValueError`` when a ``context`` of ``context`` examples cannot be chosen from a pool of ``pool``."""
    if context is not None and context > pool:
        raise ValueError(f"context: {context} examples cannot be chosen from a pool of {pool} ({pool_name}; allowed: "
                         f"1 to {pool})")


def context_suffix(context: int | None) -> str:
    """A key's mark of a context budget: ``-ctx5`` (nothing when unset)."""
    return "" if context is None else f"-ctx{context}"


class FamilyOptions(BaseModel):
    """What a job's ``family:`` block may set for one family; unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Options that name a file or folder: a relative one in a job file is relative to the job's folder.
    path_fields: ClassVar[tuple[str, ...]] = ()


class TaskFamily(ABC):
    """A distribution over tasks with disjoint train/val/test splits.

    A subclass sets ``name`` (its key in ``metaopt.tasks.FAMILIES``), ``kind``,
    ``Options`` and ``metrics``, and says in ``key`` which options change the tasks.
    """

    name: ClassVar[str]
    kind: ClassVar[TaskKind]
    Options: ClassVar[type[FamilyOptions]] = FamilyOptions
    metrics: ClassVar[tuple[Metric, ...]]
    input_shape: tuple[int, ...]
    output_size: int
    n_way: int | None = None
    # Fixed evaluation tasks come in chunks of this size, so the first n of a larger set are the same tasks.
    EVAL_CHUNK: ClassVar[int] = 100

    @classmethod
    def from_options(cls, options: FamilyOptions) -> TaskFamily:
        """The family a validated ``Options`` describes."""
        return cls(**options.model_dump())

    @classmethod
    def key(cls, options: FamilyOptions) -> str:
        """The family's name and the options that change its tasks, e.g. ``glyphs-5w1s-q5``.

        By default every option counts (``name-option1value-...``, in field order); a family
        overrides this with a shorter, readable key of the options that matter.
        """
        parts = [f"{field}{_plain(value)}" for field, value in options.model_dump().items()]
        return "-".join([getattr(cls, "name", cls.__name__.lower()), *parts])

    @classmethod
    def metrics_for(cls, options: FamilyOptions) -> tuple[Metric, ...]:
        """The metrics of the family with these options (most families: ``metrics``, whatever the options)."""
        return cls.metrics

    @classmethod
    def metric_sets(cls) -> tuple[tuple[Metric, ...], ...]:
        """Every set of metrics ``metrics_for`` may give (to read records whose options are not at hand)."""
        return (cls.metrics,)

    @classmethod
    def limit(cls, options: FamilyOptions) -> dict[str, Any] | None:
        """The family's exact limit, where one is known and computable: the configuration (``method`` and its
        settings) of the best any method can expect, e.g. the Bayes-optimal policy; ``None`` otherwise."""
        return None

    @classmethod
    def primary_metric(cls) -> Metric:
        """What validation selects by and the leaderboard ranks by (of the default options)."""
        return cls.metrics[0]

    @abstractmethod
    def sample(self, batch_size: int, split: Split, generator: torch.Generator) -> TaskBatch:
        """Draw ``batch_size`` tasks of ``split``; deterministic given ``generator``."""

    def pooled(self, batch_size: int, split: Split, generator: torch.Generator) -> PooledBatch:
        """``batch_size`` examples of ``split``'s tasks pooled together (default: tasks' support and query points).

        A family whose task labels are episode-relative (N-way episodes) overrides this with
        global class labels; the default is right where targets are values or labels are global.
        """
        batch = self.sample(1, split, generator)
        tasks = -(-batch_size // (batch.support_x.shape[1] + batch.query_x.shape[1]))
        if tasks > 1:
            batch = self.sample(tasks, split, generator)
        x = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)
        y = torch.cat([batch.support_y, batch.query_y], 1).flatten(0, 1)
        return PooledBatch(x[:batch_size], y[:batch_size])

    def score(self, predictions: Tensor, batch: TaskBatch) -> dict[str, Tensor]:
        """Every metric of the family, per task ``[tasks]``, for query ``predictions`` of ``batch``."""
        targets = batch.query_y.to(predictions.device)
        return {metric.name: metric.per_task(predictions, targets) for metric in self.metrics}

    def model_example(self, batch: Any) -> dict[str, Any]:
        """One task of ``batch`` as the logged model's input example: ``support_x``, ``support_y``, ``query_x`` arrays."""
        return {"support_x": batch.support_x[0].numpy(), "support_y": batch.support_y[0].numpy(),
                "query_x": batch.query_x[0].numpy()}

    def score_learner(self, learner: Any, batch: Any, steps: int | None = None) -> dict[str, Tensor]:
        """Every metric per task of ``learner`` on ``batch``: its query predictions after adapting (RL: its play)."""
        return self.score(learner.predict(batch, steps), batch)

    def distinct_tasks(self, split: Split) -> int | None:
        """How many different tasks ``split`` holds (users, tables' groups); ``None`` for a family drawn afresh."""
        return None

    def fixed_tasks(self, n_tasks: int, split: Split, seed: int, chunk: int | None = None) -> list[TaskBatch]:
        """A fixed, reproducible set of ``n_tasks`` tasks of ``split``, in chunks (for evaluation).

        Whole chunks are the same tasks in every set of the same seed: the first ``k * chunk``
        tasks of a larger set are those of a smaller one (``common_tasks``).
        """
        chunk = chunk or self.EVAL_CHUNK
        generator = torch.Generator().manual_seed(seed)
        sizes = [min(chunk, n_tasks - start) for start in range(0, n_tasks, chunk)]
        return [self.sample(size, split, generator) for size in sizes]


def common_tasks(a: int, b: int, chunk: int = TaskFamily.EVAL_CHUNK) -> int:
    """How many leading tasks two fixed sets of ``a`` and ``b`` tasks (same seed and chunk) share."""
    if a == b:
        return a
    smaller = min(a, b)
    return smaller if smaller % chunk == 0 else smaller // chunk * chunk


def _plain(value: object) -> str:
    """An option value as key text: booleans as yes/no, anything else as written, path separators dropped."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("/", "_").replace(" ", "_")
