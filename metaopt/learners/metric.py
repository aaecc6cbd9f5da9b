"""What metric-based learners share: no inner loop, an episode's query logits from its support set.

Each learner defines ``episode_logits(meta, support_x, support_y, query_x)`` for one
episode; ``vmap`` runs it over the episodes of a batch, the outer loss is the
query cross-entropy, and adaptation to a new task is just computing the logits
against its support set.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metaopt.learners.base import POSITIVE_FLOAT, HParam, MetaLearner
from metaopt.learners.core import InnerLoop, Params
from metaopt.learners.inner_optimizers import Adam
from metaopt.tasks.base import TaskBatch

METRIC_HPARAMS: dict[str, HParam] = {
    "outer_lr": HParam(default=0.001, help="Adam learning rate", **POSITIVE_FLOAT),
    "meta_batch": HParam(type=int, default=4, minimum=1, help="episodes per meta-batch"),
    # Task-aware fine-tuning: at test, the support set classified against itself, Adam on every meta-parameter.
    "ft_steps": HParam(type=int, default=0, minimum=0, help="task-aware fine-tuning: Adam steps on the support set "
                       "classified against itself, at test only (0: none)"),
    "ft_lr": HParam(default=0.001, help="task-aware fine-tuning step size", **POSITIVE_FLOAT),
}


class MetricLearner(MetaLearner):
    """A learner that classifies queries by comparing them with the support set in an embedding space."""

    uses_head: ClassVar[bool] = False
    task_kinds: ClassVar[tuple[str, ...]] = ("classification",)
    force_vmap: bool = False  # vmap over episodes on the CPU too (tests compare the two)
    hyperparameters: ClassVar[dict[str, HParam]] = METRIC_HPARAMS

    def __init__(
        self,
        backbone: nn.Module,
        hparams: Mapping[str, Any] | None = None,
        *,
        task_kind: str,
        max_iterations: int | None = None,
        n_way: int | None = None,
    ) -> None:
        if task_kind != "classification":
            raise ValueError(f"{self.name} classifies; task kind {task_kind!r} is not supported")
        super().__init__(backbone, hparams, task_kind=task_kind, max_iterations=max_iterations, n_way=n_way)
        self.params: Params = dict(backbone.named_parameters())
        self.extras: dict[str, nn.Parameter] = self.make_extras()
        self.buffers = dict(backbone.named_buffers())
        self.optimizer = torch.optim.Adam(self.meta_parameters().values(), lr=self.hparams["outer_lr"])

    def make_extras(self) -> dict[str, nn.Parameter]:
        """Learned tensors besides the embedding network (a relation module, a scale)."""
        return {}

    def meta_parameters(self) -> dict[str, Tensor]:
        """The embedding network's parameters and the extras."""
        return {**self.params, **self.extras}

    def embed(self, meta: Params, x: Tensor) -> Tensor:
        """Embeddings ``[n, ...]`` of ``x [n, ...]`` with the network at ``meta``."""
        return functional_call(self.backbone, ({k: meta[k] for k in self.params}, self.buffers), (x,))

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

    def _n_way(self, support_y: Tensor) -> int:
        return self.n_way if self.n_way is not None else int(support_y.max()) + 1

    def batch_logits(self, meta: Params, batch: TaskBatch) -> Tensor:
        """Query logits ``[tasks, queries, n_way]`` of every episode: ``vmap`` on a GPU, a loop on the CPU.

        On the CPU a convolution is already as wide as the cores, and ``vmap``'s batch-norm
        and max-pool rules add copies: one episode at a time was 1.2x (4 episodes) to 1.7x
        (16) faster for Conv-4 here. The two agree (``tests/learners/test_metric_learners.py``).
        """
        n_way = self._n_way(batch.support_y)
        logits = lambda sx, sy, qx: self.episode_logits(meta, sx, sy, qx, n_way)  # noqa: E731
        if batch.support_x.device.type == "cpu" and not self.force_vmap:
            return torch.stack([logits(*episode) for episode in zip(batch.support_x, batch.support_y, batch.query_x)])
        return vmap(logits)(batch.support_x, batch.support_y, batch.query_x)

    def episode_loss(self, logits: Tensor, query_y: Tensor) -> Tensor:
        """Training loss of query logits ``[tasks, queries, ways]`` (cross-entropy unless a paper says otherwise)."""
        return F.cross_entropy(logits.flatten(0, 1), query_y.flatten())

    def meta_step(self, batch: TaskBatch) -> dict[str, Tensor]:
        """One Adam step on the mean query loss of the batch's episodes.

        Where the episodes run one after another (the CPU), each is differentiated on its own
        and the gradients summed (the episodes are of one size, so the mean loss is the mean of
        theirs): memory holds one episode's graph, the same speed (ResNet-12: less than half
        the peak, ``benchmarks/image_throughput.py``).
        """
        self.optimizer.zero_grad(set_to_none=True)
        if batch.support_x.device.type == "cpu" and not self.force_vmap and batch.num_tasks > 1:
            loss = torch.zeros(())
            for t in range(batch.num_tasks):
                one = batch.slice(t, t + 1)
                part = self.episode_loss(self.batch_logits(self.meta_parameters(), one), one.query_y) / batch.num_tasks
                part.backward()
                loss = loss + part.detach()
        else:
            loss = self.episode_loss(self.batch_logits(self.meta_parameters(), batch), batch.query_y)
            loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return {"loss": loss.detach()}

    def fine_tuned(self, support_x: Tensor, support_y: Tensor, n_way: int) -> Params:
        """The meta-parameters after task-aware fine-tuning on one support set (``ft_steps``; none: as meta-learned)."""
        meta = {k: v.detach() for k, v in self.meta_parameters().items()}
        steps = self.hparams.get("ft_steps") or 0
        if not steps:
            return meta

        def support_loss(params: Params, x: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(self.episode_logits(params, x, y, x, n_way), y)

        inner = InnerLoop(lrs=[self.hparams["ft_lr"]] * steps, first_order=True, optimizer=Adam())
        return inner.run(support_loss, meta, support_x, support_y)

    def predict(self, batch: TaskBatch, steps: int | None = None) -> Tensor:
        """Query logits ``[tasks, queries, ways]`` of every episode (no inner loop: ``steps`` is ignored)."""
        if self.hparams.get("ft_steps"):  # each episode fine-tuned on its own support set
            return torch.stack([self.adapt(sx, sy)(qx) for sx, sy, qx in
                                zip(batch.support_x, batch.support_y, batch.query_x)])
        with torch.no_grad():
            return self.batch_logits(self.meta_parameters(), batch)

    def adapt(self, support_x: Tensor, support_y: Tensor, steps: int | None = None) -> Callable[[Tensor], Tensor]:
        """A predictor of query logits against this support set."""
        device = self.device
        support_x, support_y = support_x.to(device), support_y.to(device)
        n_way = self._n_way(support_y)
        meta = self.fine_tuned(support_x, support_y, n_way)

        def predict(query_x: Tensor) -> Tensor:
            with torch.no_grad():
                return self.episode_logits(meta, support_x, support_y, query_x.to(device), n_way)

        return predict


def class_means(embeddings: Tensor, labels: Tensor, n_way: int) -> Tensor:
    """Per-class means ``[n_way, ...]`` of ``embeddings [n, ...]`` (prototypes)."""
    onehot = F.one_hot(labels, n_way).to(embeddings.dtype)  # [n, ways]
    flat = embeddings.reshape(embeddings.shape[0], -1)
    means = onehot.T @ flat / onehot.sum(0).unsqueeze(1)
    return means.reshape(n_way, *embeddings.shape[1:])
