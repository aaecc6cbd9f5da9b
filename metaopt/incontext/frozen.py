"""The frozen in-context model: context examples and queries in, predictions out; never updated.

One interface for every model whose context is what can be chosen: a model metaopt trained (any registered
learner, loaded from ``models:/metaopt-<key>@champion``, a run or a file) and, behind the same interface, a language
model over HTTP. ``predict`` takes one context per task; ``predict_each`` one context per query (what a selector
chooses), run as one batch of single-query tasks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from metaopt.learners.base import MetaLearner
from metaopt.tasks.base import TaskBatch


class FrozenModel(ABC):
    """A model that learns in context; what it sees is all that changes."""

    @abstractmethod
    def predict(self, context_x: Tensor, context_y: Tensor, query_x: Tensor) -> Tensor:
        """Predictions ``[tasks, Q, ...]`` for ``query_x [tasks, Q, ...]`` given ``context_x, context_y [tasks, k, ...]``:
        targets for regression, logits (or log-probabilities) over the ways for classification."""

    def predict_each(self, context_x: Tensor, context_y: Tensor, query_x: Tensor) -> Tensor:
        """Each query with its own context: ``context_x, context_y [tasks, Q, k, ...]``, ``query_x [tasks, Q, ...]``
        → ``[tasks, Q, ...]``."""
        tasks, queries = query_x.shape[:2]
        out = self.predict(context_x.flatten(0, 1), context_y.flatten(0, 1), query_x.flatten(0, 1).unsqueeze(1))
        return out.squeeze(1).unflatten(0, (tasks, queries))


class TrainedModel(FrozenModel):
    """A learner metaopt trained, frozen: its predictions after reading the context (an in-context learner reads it
    in one forward pass; a gradient learner would adapt to it, and is frozen all the same)."""

    def __init__(self, learner: MetaLearner) -> None:
        self.learner = learner
        for tensor in learner.meta_parameters().values():
            tensor.requires_grad_(False)

    @classmethod
    def load(cls, uri: str) -> TrainedModel:
        """The model at ``uri`` (``models:/metaopt-<key>@champion``, a logged model, a run id or a file)."""
        from metaopt.tracking.models import load_learner

        return cls(load_learner(uri))

    def predict(self, context_x: Tensor, context_y: Tensor, query_x: Tensor) -> Tensor:
        """The learner's query predictions, each task's context as its support set."""
        unknown = context_y.new_zeros(query_x.shape[:2] + context_y.shape[2:])  # never read: the targets to predict
        device = self.learner.device
        batch = TaskBatch(context_x.to(device), context_y.to(device), query_x.to(device), unknown.to(device))
        with torch.no_grad():
            return self.learner.predict(batch)
