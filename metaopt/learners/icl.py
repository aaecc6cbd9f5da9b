"""``icl``: a transformer that learns in context (Garg, Tsipras, Liang & Valiant, NeurIPS 2022), meta-trained on the family.

A task is read as one sequence: a token per support pair, e(x_i) W_x + y_i W_y, and a token
per query, e(x*) W_x + q (a learned "target unknown" vector). ``depth`` pre-norm transformer
layers of ``width`` and ``heads`` attend over it, support tokens to the support, each query
token to the support and to itself only, with no positions: the prediction of a query
depends neither on the order of the support nor on the other queries. A head reads each
query token: the target's values (regression) or logits over the ways (classification).
Nothing is adapted by gradient at test: a new task is learned in the forward pass.
``curriculum``: over that fraction of the training budget, the context grows from
``min_context`` support examples (a random subset each meta-step) to the whole support set, as
the paper's curriculum over the number of in-context examples. ``e`` is the job's backbone as
an embedding network (Conv-4 for images).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metaopt.learners.base import HParam
from metaopt.learners.context import CONTEXT_HPARAMS, ContextLearner, check_heads, embedding
from metaopt.learners.core import Params
from metaopt.tasks.base import TaskBatch, TaskKind


class ICL(ContextLearner):
    """A transformer over the support pairs and the queries, trained to predict each query in context."""

    name: ClassVar[str] = "icl"
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("regression", "classification")
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **CONTEXT_HPARAMS,
        "width": HParam(type=int, default=64, minimum=4, help="token width (the transformer's d_model)"),
        "depth": HParam(type=int, default=3, minimum=1, help="transformer layers"),
        "heads": HParam(type=int, default=4, minimum=1, help="attention heads (they divide the width)"),
        "curriculum": HParam(type=float, default=0.0, minimum=0.0, maximum=1.0,
                             help="fraction of the budget over which the context grows to the whole support (0: off)"),
        "min_context": HParam(type=int, default=1, minimum=1, help="support examples in context at the start"),
    }

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """The embedding, the token maps of inputs and targets, the query marker and the transformer."""
        check_heads(cls.name, hparams)  # before torch's own assertion deep in the attention layer
        embed, features = embedding(backbone, input_shape)
        width = hparams["width"]
        layer = nn.TransformerEncoderLayer(width, hparams["heads"], dim_feedforward=2 * width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        network = nn.ModuleDict({
            "embed": embed,
            "x_map": nn.Linear(features, width),
            "y_map": nn.Linear(output_size, width, bias=False),
            "transformer": nn.TransformerEncoder(layer, hparams["depth"], norm=nn.LayerNorm(width),
                                                 enable_nested_tensor=False),
        })
        network.register_parameter("query", nn.Parameter(0.02 * torch.randn(width)))
        network.outputs = output_size
        return network

    def _context(self, batch: TaskBatch) -> TaskBatch:
        """The batch with the curriculum's share of the support set (a random subset, the same for every task)."""
        fraction = self.hparams["curriculum"]
        shots = batch.support_x.shape[1]
        if not (torch.is_grad_enabled() and fraction and self.max_iterations):
            return batch
        progress = min(1.0, self.iteration / (fraction * self.max_iterations))
        first = min(self.hparams["min_context"], shots)
        keep = first + math.floor(progress * (shots - first))
        if keep >= shots:
            return batch
        chosen = torch.randperm(shots, generator=self.generator)[:keep].to(batch.support_x.device)
        return TaskBatch(batch.support_x[:, chosen], batch.support_y[:, chosen], batch.query_x, batch.query_y)

    def batch_predictions(self, meta: Params, batch: TaskBatch) -> Tensor:
        """Every query's prediction, each read in the context of its task's support set."""
        batch = self._context(batch)
        n_way = self._n_way(batch.support_y)
        shots, queries = batch.support_x.shape[1], batch.query_x.shape[1]
        support = self.call("x_map", meta, self.embed_episodes(meta, batch.support_x))
        support = support + self.call("y_map", meta, self.target_features(batch.support_y, n_way))
        query = self.call("x_map", meta, self.embed_episodes(meta, batch.query_x)) + meta["query"]
        tokens = torch.cat([support, query], 1)  # [tasks, shots + queries, width]
        # True where attention is not allowed: nobody attends to a query token, but each query to itself.
        blocked = torch.zeros(shots + queries, shots + queries, dtype=torch.bool, device=tokens.device)
        blocked[:, shots:] = True
        blocked.diagonal()[shots:] = False
        read = self.call("transformer", meta, tokens, mask=blocked)
        return self.head(meta, read[:, shots:])
