"""Sinusoid regression (Finn et al. 2017, "Model-Agnostic Meta-Learning", section 5.1).

A task is ``y = A sin(x - phi)`` with amplitude ``A ~ U[0.1, 5.0]``, phase
``phi ~ U[0, pi]`` and inputs ``x ~ U[-5, 5]``; K support and Q query points.
Each batch gets its own seed from the caller's generator; the seeds of the
train, val and test splits are disjoint residues modulo 3, so no split ever
draws from another split's seed stream.
"""

from __future__ import annotations

import math

import torch

from pydantic import model_validator

from metaopt.tasks.base import (SPLITS, ContextBudget, Count, FamilyOptions, Split, TaskBatch, TaskFamily,
                                   check_context, context_suffix)
from metaopt.tasks.metrics import REGRESSION


class SineOptions(FamilyOptions):
    """``shots`` support and ``queries`` query points a task; an in-context model's ``context`` of the shots."""

    shots: Count = 10
    queries: Count = 10
    context: ContextBudget = None

    @model_validator(mode="after")
    def _context_within_pool(self) -> SineOptions:
        check_context(self.context, self.shots, "shots")
        return self


class Sine(TaskFamily):
    """Few-shot sinusoid regression."""

    name = "sine"
    kind = "regression"
    Options = SineOptions
    metrics = REGRESSION

    @classmethod
    def key(cls, options: SineOptions) -> str:
        """``sine-10shot``; the query count too when it differs from the shots (``sine-5shot-q20``), and a context
        budget (``sine-40shot-ctx5``)."""
        queries = "" if options.queries == options.shots else f"-q{options.queries}"
        return f"sine-{options.shots}shot{queries}{context_suffix(options.context)}"

    def __init__(
        self,
        *,
        shots: int = 10,
        queries: int = 10,
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        context: int | None = None,
    ) -> None:
        if shots < 1 or queries < 1:
            raise ValueError(f"shots and queries must be >= 1, got shots={shots}, queries={queries}")
        check_context(context, shots, "shots")
        self.shots, self.queries, self.context = shots, queries, context
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range
        self.input_shape = (1,)
        self.output_size = 1

    def sample(self, batch_size: int, split: Split, generator: torch.Generator) -> TaskBatch:
        """Draw ``batch_size`` sine tasks of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        batch_seed = int(torch.randint(0, 2**60, (1,), generator=generator)) * 3 + SPLITS.index(split)
        g = torch.Generator().manual_seed(batch_seed)
        amp = _uniform((batch_size, 1, 1), self.amplitude, g)  # [tasks, 1, 1]
        phase = _uniform((batch_size, 1, 1), self.phase, g)
        x = _uniform((batch_size, self.shots + self.queries, 1), self.x_range, g)  # [tasks, points, 1]
        y = amp * torch.sin(x - phase)
        return TaskBatch(x[:, : self.shots], y[:, : self.shots], x[:, self.shots :], y[:, self.shots :])


def _uniform(shape: tuple[int, ...], bounds: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    low, high = bounds
    return torch.rand(shape, generator=g) * (high - low) + low
