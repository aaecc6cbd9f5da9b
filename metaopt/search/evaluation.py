"""Evaluation: a learner's per-task scores, for every metric of its family, on fixed tasks of one key.

The test tasks of a key are the same for every search, method and seed (``TEST_SEED``,
drawn in chunks of 100, so the whole chunks of a larger set are those of a smaller one):
per-task scores of two candidates pair up, even from searches of different budgets.
A trial, ``metaopt select`` and every benchmark script score through ``evaluate_test``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from metaopt.learners.base import MetaLearner
from metaopt.tasks.base import Split, TaskBatch, TaskFamily, common_tasks

TEST_SEED = 20170703
Z_95 = 1.959963984540054
FORMAT = 1  # of the recorded scores (``TaskScores.to_data``)


def score_tasks(
    learner: MetaLearner, family: TaskFamily, batches: list[TaskBatch], steps: int | None = None
) -> dict[str, torch.Tensor]:
    """Per-task scores ``{metric: [tasks]}`` of every metric of ``family`` over every batch.

    ``steps``: inner steps when adapting (default: the learner's ``test_steps``).
    """
    parts = []
    for batch in batches:
        batch = batch.to(learner.device)
        parts.append(family.score_learner(learner, batch, steps))
    return {name: torch.cat([p[name] for p in parts]).cpu() for name in parts[0]}


def mean_ci(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (normal approximation)."""
    values = values.double()
    n = values.numel()
    half = Z_95 * values.std(unbiased=True).item() / math.sqrt(n) if n > 1 else float("nan")
    return values.mean().item(), half


@dataclass(frozen=True)
class TaskScores:
    """One learner's per-task scores on the first ``tasks`` fixed tasks of ``split`` of ``key``."""

    key: str
    per_task: dict[str, list[float]] = field(repr=False)
    split: Split = "test"
    seed: int = TEST_SEED
    chunk: int = TaskFamily.EVAL_CHUNK
    # Figures beside the per-task scores: what adapting costs (``adaptation_cost``), the spread across training seeds
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def tasks(self) -> int:
        """How many tasks were scored."""
        return len(next(iter(self.per_task.values()), []))

    def values(self, metric: str) -> torch.Tensor:
        """Per-task values of ``metric`` as a float64 tensor."""
        return torch.tensor(self.per_task[metric], dtype=torch.float64)

    def mean_ci(self, metric: str) -> tuple[float, float]:
        """Mean and 95% CI half-width of ``metric``."""
        return mean_ci(self.values(metric))

    def summary(self) -> dict[str, float]:
        """``<split>_<metric>`` and ``<split>_<metric>_ci95`` for every metric, and ``<split>_tasks``."""
        out: dict[str, float] = {f"{self.split}_tasks": float(self.tasks)}
        for name in self.per_task:
            out[f"{self.split}_{name}"], out[f"{self.split}_{name}_ci95"] = self.mean_ci(name)
        out.update({f"{self.split}_{name}": value for name, value in self.extra.items()})
        return out

    def pairs_with(self, other: TaskScores) -> bool:
        """Whether the two share leading tasks (same key, split, seed and chunking), task i the same in both."""
        same = (self.key, self.split, self.seed, self.chunk) == (other.key, other.split, other.seed, other.chunk)
        return same and self.common_tasks(other) > 0

    def common_tasks(self, other: TaskScores) -> int:
        """How many leading tasks both were scored on."""
        return common_tasks(self.tasks, other.tasks, self.chunk)

    def to_data(self) -> dict[str, Any]:
        """Plain data, for a tracker to store beside the run."""
        return {"format": FORMAT, "key": self.key, "split": self.split, "seed": self.seed, "chunk": self.chunk,
                "tasks": self.tasks, "per_task": self.per_task, "extra": self.extra}

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> TaskScores:
        """The scores ``to_data`` wrote; ``ValueError`` for another format."""
        if data.get("format") != FORMAT:
            raise ValueError(f"unsupported task-scores format {data.get('format')!r} (expected {FORMAT})")
        return cls(data["key"], {k: list(map(float, v)) for k, v in data["per_task"].items()}, data["split"],
                   int(data["seed"]), int(data["chunk"]), {k: float(v) for k, v in data.get("extra", {}).items()})


def evaluate_test(
    learner: MetaLearner, family: TaskFamily, key: str, n_tasks: int, steps: int | None = None, *,
    cost: bool = True,
) -> TaskScores:
    """``learner`` on the first ``n_tasks`` fixed test tasks of ``key`` (``family`` built from that key's options);
    ``cost``: with what adapting to one of them costs (``adaptation_cost``)."""
    tasks = family.fixed_tasks(n_tasks, "test", seed=TEST_SEED)
    scores = score_tasks(learner, family, tasks, steps)
    return TaskScores(key, {name: values.tolist() for name, values in scores.items()},
                      extra=adaptation_cost(learner, family, tasks=timed(n_tasks), steps=steps) if cost else {})


COST_TASKS = 20  # single tasks timed, after one untimed warm-up


def timed(n_tasks: int) -> int:
    """How many single tasks to time: 20, but never more than a fifth of the tasks scored (at least 3)."""
    return max(3, min(COST_TASKS, n_tasks // 5))


def adaptation_cost(learner: MetaLearner, family: TaskFamily, *, tasks: int = COST_TASKS,
                    steps: int | None = None, split: Split = "test") -> dict[str, float]:
    """What adapting to one new task and predicting its queries costs, on the learner's device: ``adapt_ms`` (median
    over ``tasks`` tasks of ``split``, one at a time), ``adapt_ms_p90``, and on a GPU ``adapt_peak_mb`` (the most
    memory adapting took above what was held before). A metric learner embeds the support; MAML takes its inner
    steps; an in-context model runs one forward pass; an RL policy plays the task. (A search of two objectives times
    validation tasks: a trial never sees a test task.)"""
    import time

    generator = torch.Generator().manual_seed(TEST_SEED + 1)
    cuda = learner.device.type == "cuda"
    times = []
    for i in range(tasks + 1):
        batch = family.sample(1, split, generator).to(learner.device)
        if cuda:
            torch.cuda.synchronize(learner.device)
            held = torch.cuda.memory_allocated(learner.device)
            torch.cuda.reset_peak_memory_stats(learner.device)
        start = time.perf_counter()
        family.score_learner(learner, batch, steps)
        if cuda:
            torch.cuda.synchronize(learner.device)
        if i:  # the first: caches, lazy buffers
            times.append(1000 * (time.perf_counter() - start))
    ordered = torch.tensor(times, dtype=torch.float64)
    cost = {"adapt_ms": ordered.median().item(), "adapt_ms_p90": ordered.quantile(0.9).item()}
    if cuda:
        cost["adapt_peak_mb"] = (torch.cuda.max_memory_allocated(learner.device) - held) / 2**20
    return cost


def across_seeds(runs: list[TaskScores]) -> TaskScores:
    """One candidate's scores over its training seeds: each task's score the mean over the seeds (the champion
    decision pairs these), and beside them ``<metric>_seed_sd`` (the standard deviation of the seeds' mean scores:
    how much a ranking depends on the training seed) and ``seeds``; the first run's adaptation cost."""
    first = runs[0]
    per_task = {name: torch.stack([r.values(name)[: first.tasks] for r in runs]).mean(0).tolist()
                for name in first.per_task}
    extra = {**first.extra, "seeds": float(len(runs))}
    for name in first.per_task:
        means = torch.tensor([r.values(name).mean().item() for r in runs], dtype=torch.float64)
        extra[f"{name}_seed_sd"] = means.std(unbiased=True).item() if len(runs) > 1 else 0.0
    return TaskScores(first.key, per_task, first.split, first.seed, first.chunk, extra)
