"""What metric-based learners share: an episode's query logits from comparing queries with its support set.

Each learner defines ``episode_logits(meta, support_x, support_y, query_x, n_way)`` for
one episode; the rest (batching over episodes, the outer step, adaptation, task-aware
fine-tuning) is every episodic learner's (``episodic.py``). The outer loss is the query
cross-entropy unless a paper says otherwise.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from metaopt.learners.core import Params
from metaopt.learners.episodic import EPISODIC_HPARAMS, EpisodicLearner
from metaopt.tasks.base import TaskBatch

METRIC_HPARAMS = EPISODIC_HPARAMS


class MetricLearner(EpisodicLearner):
    """A learner that classifies queries by comparing them with the support set in an embedding space."""

    uses_head: ClassVar[bool] = False
    task_kinds: ClassVar[tuple[str, ...]] = ("classification",)

    def embedding_width(self) -> int:
        """Width of the backbone's embedding vectors (for learned modules on top of it)."""
        for module in reversed(list(self.backbone.modules())):
            if isinstance(module, nn.Linear):
                return module.out_features
        size = getattr(self.backbone, "embedding_size", None)
        if size is None:
            raise ValueError(f"{self.name} needs a backbone whose embedding width is known (Conv-4, ResNet or MLP)")
        return size

    @abstractmethod
    def episode_logits(self, meta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        """Query logits ``[queries, n_way]`` of one episode."""

    def episode_predictions(self, meta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                            n_way: int | None) -> Tensor:
        """The episode's query logits."""
        return self.episode_logits(meta, support_x, support_y, query_x, n_way)

    def batch_logits(self, meta: Params, batch: TaskBatch) -> Tensor:
        """Query logits ``[tasks, queries, n_way]`` of every episode."""
        return self.batch_predictions(meta, batch)


def class_means(embeddings: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Per-class means ``[n_way, ...]`` of ``embeddings [n, ...]`` (prototypes)."""
    onehot = F.one_hot(labels, n_way).to(embeddings.dtype)  # [n, ways]
    flat = embeddings.reshape(embeddings.shape[0], -1)
    means = onehot.T @ flat / onehot.sum(0).unsqueeze(1)
    return means.reshape(n_way, *embeddings.shape[1:])
