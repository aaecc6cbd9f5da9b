"""``anp``: an attentive neural process (Kim, Mnih, Schwarz, Garnelo, Eslami, Rosenbaum, Vinyals & Teh, ICLR 2019),
its deterministic path.

Where a conditional neural process (``cnp``) summarises a task by the mean of its encoded
support pairs, which underfits (the mean forgets which pair is near the query), the ANP
lets each query attend to them: ``r_i = h(e(x_i), y_i)`` (labels one-hot), ``layers`` of
multi-head self-attention among the ``r_i``, then multi-head cross-attention with the
query's embedding as query and the support embeddings as keys, so each query reads its own
summary ``r*``; the decoder ``g(e(x*), r*)`` gives a mean and a spread (regression, trained by
Gaussian log-likelihood). For classification, as the CNP paper's class-wise aggregate, the
query reads each class's pairs on their own, ``r*_c``, and ``g(e(x*), r*_c)`` is the logit of
class c (attention over all pairs at once, logits over the ways from one summary, sits on a
plateau at chance on 5-way glyphs for hundreds of steps). The paper's latent path (a global
Gaussian variable trained by a variational bound) is left out: on these families its
predictive mean is what the leaderboard scores. No position or order enters anywhere: the
support is a set, and each query is read on its own.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metaopt.learners.base import HParam
from metaopt.learners.cnp import CNP
from metaopt.learners.context import check_heads, embedding, mlp
from metaopt.learners.core import Params
from metaopt.tasks.base import TaskBatch


class ANP(CNP):
    """A neural process whose queries attend to the encoded support pairs."""

    name: ClassVar[str] = "anp"
    hyperparameters: ClassVar[dict[str, HParam]] = {
        **CNP.hyperparameters,
        "heads": HParam(type=int, default=4, minimum=1, help="attention heads (they divide the width)"),
    }

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """The embedding, the pair encoder and its self-attention, the cross-attention and the decoder."""
        check_heads(cls.name, hparams)  # before torch's own assertion deep in the attention layer
        embed, features = embedding(backbone, input_shape)
        width, layers, heads = hparams["width"], hparams["layers"], hparams["heads"]
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True,
                                           norm_first=True)
        network = nn.ModuleDict({
            "embed": embed,
            "encode": mlp([features + output_size] + [width] * layers),
            "self_attention": nn.TransformerEncoder(layer, layers, enable_nested_tensor=False),
            "key_map": nn.Linear(features, width),
            "cross_attention": nn.MultiheadAttention(width, heads, batch_first=True),
            "decode": nn.Sequential(mlp([features + width] + [width] * layers), nn.ReLU()),
        })
        network.outputs = output_size
        return network

    def batch_outputs(self, meta: Params, batch: TaskBatch) -> Tensor:
        """The head's outputs of every query, each after attending to its task's encoded support pairs:
        ``[tasks, queries, 2 d]``, or logits ``[tasks, queries, ways]`` where each class's logit reads that
        class's pairs only (the CNP paper's class-wise aggregate, by attention)."""
        n_way = self._n_way(batch.support_y)
        support, query = self.embed_episodes(meta, batch.support_x), self.embed_episodes(meta, batch.query_x)
        pairs = self.call("encode", meta, torch.cat([support, self.target_features(batch.support_y, n_way)], -1))
        values = self.call("self_attention", meta, pairs)
        keys, asking = self.call("key_map", meta, support), self.call("key_map", meta, query)
        if self.task_kind != "classification":
            read, _ = self.call("cross_attention", meta, asking, keys, values, need_weights=False)
            return self.head(meta, self.call("decode", meta, torch.cat([query, read], -1)))
        tasks, queries = query.shape[:2]
        # One attention read per (class, query): True where a support pair is of another class (masked out).
        other = batch.support_y[:, None, :] != torch.arange(n_way, device=query.device)[None, :, None]
        blocked = other[:, :, None].expand(-1, -1, queries, -1).flatten(1, 2)  # [tasks, ways * q, shots]
        blocked = blocked.repeat_interleave(self.hparams["heads"], 0)
        read, _ = self.call("cross_attention", meta, asking.repeat(1, n_way, 1), keys, values, attn_mask=blocked,
                            need_weights=False)  # [tasks, ways * q, width]
        reading = torch.cat([query.repeat(1, n_way, 1), read], -1)
        logits = self.head(meta, self.call("decode", meta, reading))[..., 0]  # [tasks, ways * q]
        return logits.view(tasks, n_way, queries).transpose(1, 2)
