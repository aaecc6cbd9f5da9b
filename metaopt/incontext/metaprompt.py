"""``metaprompt``: a learned selector of what a frozen in-context model sees.

For each query, a scorer rates every example of the task's pool against the query (an MLP over the query, the
example, its target and their difference), and ``context`` examples are chosen one after another: the score of an
example not yet chosen is its rating plus a learned weight times the log of its distance to the nearest example
already chosen (so the selector can learn to spread its choices, or to cluster them). Training samples contexts from
that sequential Plackett-Luce policy (Gumbel-top-k, ``samples`` per query) and follows the policy gradient of the
frozen model's query loss, with each sample's reward judged against the mean of the query's other samples
(leave-one-out baseline). A policy gradient, not a differentiable relaxation, because it asks nothing of the frozen
model but its predictions: the same class runs against a model metaopt trained and a language model over HTTP. At test
the choice is greedy. The frozen model is never updated; a test query's target is never read.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaopt.incontext.selectors import SELECTION_HPARAMS, ContextChooser
from metaopt.learners.base import POSITIVE_FLOAT, HParam
from metaopt.learners.context import mlp
from metaopt.learners.core import Params
from metaopt.learners.episodic import EPISODIC_HPARAMS, EpisodicLearner
from metaopt.tasks.base import TaskBatch, TaskKind


class MetaPrompt(ContextChooser, EpisodicLearner):
    """Scores a task's pool against each query and picks the frozen model's context, trained by policy gradient."""

    name: ClassVar[str] = "metaprompt"
    task_kinds: ClassVar[tuple[TaskKind, ...]] = ("regression", "classification")
    batched = True
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **EPISODIC_HPARAMS,
        **SELECTION_HPARAMS,
        "samples": HParam(type=int, default=4, minimum=2, help="contexts sampled per query in training"),
        "width": HParam(type=int, default=64, minimum=4, help="the scorer's width"),
        "layers": HParam(type=int, default=2, minimum=1, help="the scorer's hidden layers"),
        "temperature": HParam(default=1.0, help="divides the scores when sampling in training", **POSITIVE_FLOAT),
    }
    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """The scorer: ``[query, example, target, example - query, |example - query|]`` to one rating."""
        features = int(torch.tensor(input_shape).prod())
        width = hparams["width"]
        return nn.ModuleDict({"score": nn.Sequential(mlp([3 * features + 1 + output_size]
                                                          + [width] * hparams["layers"]), nn.ReLU(),
                                                      nn.Linear(width, 1))})

    def make_extras(self) -> dict[str, nn.Parameter]:
        """The weight of the log-distance to the examples already chosen (0 at the start: no preference)."""
        probe = next(iter(self.params.values()))
        return {"spread": nn.Parameter(torch.zeros((), dtype=probe.dtype, device=probe.device))}

    def ratings(self, meta: Params, pool_x: Tensor, pool_y: Tensor, query_x: Tensor) -> Tensor:
        """Every pool example's rating for every query: ``[tasks, Q, N]``."""
        pool, queries = pool_x.flatten(2), query_x.flatten(2)
        n_way = self._n_way(pool_y)
        targets = F.one_hot(pool_y.long(), n_way).to(pool.dtype) if n_way else pool_y.flatten(2).to(pool.dtype)
        tasks, q, n = pool.shape[0], queries.shape[1], pool.shape[1]
        x = pool[:, None].expand(tasks, q, n, -1)
        y = targets[:, None].expand(tasks, q, n, -1)
        qx = queries[:, :, None].expand(tasks, q, n, -1)
        difference = x - qx
        features = torch.cat([qx, x, y, difference, difference.norm(dim=-1, keepdim=True)], -1)
        return self.call("score", meta, features)[..., 0]

    def choose(self, meta: Params, batch: TaskBatch, samples: int, *, greedy: bool,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Contexts ``[tasks, Q, samples, k]`` (indices into the pool, in the order chosen) and their log-probability
        under the policy ``[tasks, Q, samples]``; greedy: the most likely choice at each step."""
        k = self.check_context(batch)
        pool = batch.support_x.flatten(2)
        base = self.ratings(meta, batch.support_x, batch.support_y, batch.query_x)
        base = base[:, :, None].expand(-1, -1, samples, -1) / (1.0 if greedy else self.hparams["temperature"])
        between = torch.cdist(pool, pool)  # [tasks, N, N]
        tasks = torch.arange(pool.shape[0], device=pool.device)[:, None, None]
        taken = torch.zeros(base.shape, dtype=torch.bool, device=base.device)
        nearest = torch.zeros_like(base)
        chosen, log_prob = [], base.new_zeros(base.shape[:-1])
        for step in range(k):
            logits = base + meta["spread"] * torch.log(nearest + 1e-3) if step else base
            logits = logits.masked_fill(taken, float("-inf"))
            if greedy:
                pick = logits.argmax(-1)
            else:
                uniform = torch.rand(logits.shape, generator=generator).to(logits)
                pick = (logits.detach() - torch.log(-torch.log(uniform.clamp(1e-12, 1.0)))).argmax(-1)
            log_prob = log_prob + logits.log_softmax(-1).gather(-1, pick[..., None])[..., 0]
            taken = taken.scatter(-1, pick[..., None], True)
            row = between[tasks, pick]  # [tasks, Q, samples, N]: every example's distance to the one just chosen
            nearest = row if step == 0 else torch.minimum(nearest, row)
            chosen.append(pick)
        return torch.stack(chosen, -1), log_prob

    def frozen_loss(self, batch: TaskBatch, indices: Tensor) -> Tensor:
        """The frozen model's loss on each query with each of its contexts ``indices [tasks, Q, S, k]``: ``[tasks,
        Q, S]`` (squared error per value, or cross-entropy)."""
        tasks, q, s, k = indices.shape
        repeated = TaskBatch(batch.support_x, batch.support_y, batch.query_x.repeat_interleave(s, 1),
                             batch.query_y.repeat_interleave(s, 1))
        predictions = self.context_predictions(repeated, indices.flatten(1, 2))  # [tasks, Q S, ...]
        return self.query_losses(predictions, repeated.query_y).view(tasks, q, s)

    def policy_loss(self, meta: Params, batch: TaskBatch) -> tuple[Tensor, Tensor]:
        """The policy-gradient surrogate — minus each sampled context's advantage (its reward, minus the frozen
        loss, against the mean of the query's other samples) times its log-probability — and the frozen model's
        mean query loss on the sampled contexts."""
        s = self.hparams["samples"]
        indices, log_prob = self.choose(meta, batch, s, greedy=False, generator=self.generator)
        loss = self.frozen_loss(batch, indices)
        others = (loss.sum(-1, keepdim=True) - loss) / (s - 1)
        advantage = others - loss  # reward -loss against the leave-one-out mean reward
        advantage = advantage / advantage.std().clamp(min=1e-8)
        return -(advantage.detach() * log_prob).mean(), loss.mean()

    def training_loss(self, meta: Params, batch: TaskBatch) -> Tensor:
        """The policy-gradient surrogate (``policy_loss``)."""
        return self.policy_loss(meta, batch)[0]

    def meta_step(self, batch: TaskBatch) -> dict[str, Tensor]:
        """One policy-gradient step; reports the frozen model's mean query loss on the sampled contexts."""
        surrogate, frozen = self.policy_loss(self.meta_parameters(), batch)
        self.outer.step(loss=surrogate)
        return {"loss": frozen}

    def select(self, batch: TaskBatch) -> Tensor:
        """Each query's greedily chosen context ``[tasks, Q, k]`` (its target unread)."""
        with torch.no_grad():
            return self.choose(self.meta_parameters(), batch, 1, greedy=True)[0][:, :, 0]

    def batch_predictions(self, meta: Params, batch: TaskBatch) -> Tensor:
        """The frozen model's predictions of every query with its greedily chosen context (its target unread)."""
        indices, _ = self.choose(meta, batch, 1, greedy=True)
        return self.context_predictions(batch, indices[:, :, 0])

    def episode_predictions(self, meta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                            n_way: int | None) -> Tensor:
        """One episode's query predictions: the batched selection on a batch of one."""
        one = TaskBatch(support_x[None], support_y[None], query_x[None], query_x.new_zeros(query_x.shape[:1])[None])
        return self.batch_predictions(meta, one)[0]

    @property
    def generator(self) -> torch.Generator:
        """Training's draws (the sampled contexts), seeded from torch's global stream once."""
        if not hasattr(self, "_generator"):
            self._generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
        return self._generator
