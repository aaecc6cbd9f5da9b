"""Function classes learned in context (Garg, Tsipras, Liang & Valiant, NeurIPS 2022, "What Can Transformers Learn
In-Context?").

A task is a function ``f`` drawn from a class, inputs ``x ~ N(0, I_dim)`` and targets
``y = f(x) + noise * N(0, 1)``; ``points`` labelled examples are the context (support set)
and ``queries`` more are predicted. The classes, as in the paper:

- ``linear``: ``f(x) = w . x``, ``w ~ N(0, I_dim)``;
- ``sparse-linear``: the same with all but ``sparsity`` random coordinates of ``w`` zero;
- ``relu-net``: ``f(x) = sum_i a_i relu(w_i . x)``, 100 hidden units, ``w_i ~ N(0, I_dim)``,
  ``a_i ~ N(0, 2/100)``;
- ``tree``: a depth-4 decision tree, each node splitting on a random coordinate at 0, leaf
  values ``N(0, 1)``.

The metric is the paper's squared error divided by ``dim`` (predicting 0 scores about 1 on
the linear classes). For ``linear`` the exact Bayes-optimal predictor is known: the posterior
mean of ``w`` under its Gaussian prior, ridge regression with ``lambda = noise**2`` (minimum-norm
least squares without noise): the family's limit (``limit``). Seeds of the train, val and test
splits are disjoint residues modulo 3, as for ``sine``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PositiveInt, model_validator

from metaopt.tasks.base import (SPLITS, ContextBudget, Count, FamilyOptions, Split, TaskBatch, TaskFamily,
                                   check_context, context_suffix)
from metaopt.tasks.metrics import Metric, mse

FunctionClass = Literal["linear", "sparse-linear", "relu-net", "tree"]
HIDDEN = 100  # the relu-net class's hidden units
DEPTH = 4  # the tree class's depth


class FunctionsOptions(FamilyOptions):
    """The function class, the input dimension, context and query points a task, the target noise."""

    function: FunctionClass = "linear"
    dim: PositiveInt = Field(default=5, le=1024)
    points: Count = Field(default=10, description="labelled examples in context (the support set)")
    queries: Count = 10
    noise: float = Field(default=0.0, ge=0.0, le=100.0, description="standard deviation of the targets' noise")
    sparsity: Count = Field(default=3, description="non-zero weights of sparse-linear functions")
    context: ContextBudget = None

    @model_validator(mode="after")
    def _sparsity_within_dim(self) -> FunctionsOptions:
        if self.function == "sparse-linear" and self.sparsity > self.dim:
            raise ValueError(f"sparsity ({self.sparsity}) must be <= dim ({self.dim})")
        check_context(self.context, self.points, "points")
        return self


def per_dim(dim: int) -> Metric:
    """The paper's metric: each task's mean squared error over ``dim``."""
    return Metric("loss", "minimize", "MSE / dim", lambda predictions, targets: mse(predictions, targets) / dim)


class Functions(TaskFamily):
    """Few-shot regression of functions drawn from a class (linear, sparse linear, ReLU networks, trees)."""

    name: ClassVar[str] = "functions"
    kind = "regression"
    Options = FunctionsOptions
    metrics: ClassVar[tuple[Metric, ...]] = (per_dim(1),)

    @classmethod
    def metrics_for(cls, options: FunctionsOptions) -> tuple[Metric, ...]:
        """MSE / dim of the options' dimension."""
        return (per_dim(options.dim),)

    @classmethod
    def key(cls, options: FunctionsOptions) -> str:
        """``functions-linear-d5-k10-q10``, with ``-s3`` (sparse), ``-noise0.1`` and ``-ctx5`` when they apply."""
        sparse = f"-s{options.sparsity}" if options.function == "sparse-linear" else ""
        noise = f"-noise{options.noise:g}" if options.noise else ""
        return (f"functions-{options.function}-d{options.dim}{sparse}-k{options.points}-q{options.queries}{noise}"
                f"{context_suffix(options.context)}")

    @classmethod
    def limit(cls, options: FunctionsOptions) -> dict[str, Any] | None:
        """The exact Bayes-optimal predictor of linear functions: the posterior mean (none known for the others)."""
        if options.function != "linear":
            return None
        return {"method": "posterior_mean", "noise": float(options.noise), "prior_std": 1.0}

    def __init__(self, *, function: FunctionClass = "linear", dim: int = 5, points: int = 10, queries: int = 10,
                 noise: float = 0.0, sparsity: int = 3, context: int | None = None) -> None:
        check_context(context, points, "points")
        self.function, self.dim, self.points, self.queries = function, dim, points, queries
        self.context = context
        self.noise, self.sparsity = noise, sparsity
        self.metrics = (per_dim(dim),)  # type: ignore[misc] - per instance: the dimension's
        self.input_shape = (dim,)
        self.output_size = 1

    def sample(self, batch_size: int, split: Split, generator: torch.Generator) -> TaskBatch:
        """Draw ``batch_size`` functions of ``split`` with their context and query points."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        batch_seed = int(torch.randint(0, 2**60, (1,), generator=generator)) * 3 + SPLITS.index(split)
        g = torch.Generator().manual_seed(batch_seed)
        x = torch.randn(batch_size, self.points + self.queries, self.dim, generator=g)
        y = self.draw(batch_size, g)(x) + self.noise * torch.randn(x.shape[:2], generator=g)
        y = y[..., None]
        return TaskBatch(x[:, : self.points], y[:, : self.points], x[:, self.points :], y[:, self.points :])

    def draw(self, tasks: int, g: torch.Generator) -> Any:
        """``tasks`` functions of the class, as one map of inputs ``[tasks, n, dim]`` to values ``[tasks, n]``."""
        d = self.dim
        if self.function in ("linear", "sparse-linear"):
            w = torch.randn(tasks, d, generator=g)
            if self.function == "sparse-linear":
                keep = torch.rand(tasks, d, generator=g).argsort(1)[:, : self.sparsity]
                w = w * torch.zeros(tasks, d).scatter_(1, keep, 1.0)
            return lambda x: torch.einsum("tnd,td->tn", x, w)
        if self.function == "relu-net":
            w = torch.randn(tasks, HIDDEN, d, generator=g)
            a = torch.randn(tasks, HIDDEN, generator=g) * (2 / HIDDEN) ** 0.5
            return lambda x: torch.einsum("tnh,th->tn", torch.relu(torch.einsum("tnd,thd->tnh", x, w)), a)
        coordinates = torch.randint(0, d, (tasks, 2**DEPTH - 1), generator=g)  # each inner node's split
        leaves = torch.randn(tasks, 2**DEPTH, generator=g)

        def tree(x: torch.Tensor) -> torch.Tensor:
            node = torch.zeros(x.shape[:2], dtype=torch.long)
            for _ in range(DEPTH):  # heap order: the children of node i are 2i + 1 and 2i + 2
                split = coordinates.gather(1, node)
                right = x.gather(2, split[..., None])[..., 0] > 0
                node = 2 * node + 1 + right.long()
            return leaves.gather(1, node - (2**DEPTH - 1))

        return tree
