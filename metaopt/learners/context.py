"""What the model-based and in-context learners share: an embedding of the inputs, the targets as features, a head.

These learners read a task's support set with a network and predict its queries in one
forward pass (``EpisodicLearner`` with ``batched = True``). Inputs are embedded by the job's
backbone as an embedding network (Conv-4 for images, as for ProtoNet and MAML, so a
leaderboard compares algorithms, not backbones; an MLP for vectors), episode by episode (so
batch-norm statistics are each episode's, as the metric learners'); targets become
features (values as they are, class labels one-hot); a task head sized by the task kind maps
the network's last width to predictions (values, or logits over the ways).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from metaopt.learners.base import HParam
from metaopt.learners.core import Params, loops_tasks
from metaopt.learners.episodic import EPISODIC_HPARAMS, EpisodicLearner
from metaopt.models.layout import channels_last
from metaopt.tasks.base import TaskBatch

CONTEXT_HPARAMS: dict[str, HParam] = {
    **EPISODIC_HPARAMS,
    "width": HParam(type=int, default=128, minimum=4, help="width of the network that reads the support set"),
}


def embedding(backbone: dict[str, Any], input_shape: tuple[int, ...]) -> tuple[nn.Module, int]:
    """The job's backbone as an embedding network of ``input_shape`` inputs, and its embedding width."""
    from metaopt.models import build_backbone

    network = build_backbone(backbone, input_shape=tuple(input_shape), out_features=None)
    with torch.no_grad():
        width = network.eval()(torch.zeros(2, *input_shape)).flatten(1).shape[1]
    return network.train(), width


def check_heads(name: str, hparams: dict[str, Any]) -> None:
    """``ValueError`` unless ``heads`` divides ``width`` (attention splits the width among its heads)."""
    if hparams["width"] % hparams["heads"]:
        raise ValueError(f"{name}: heads ({hparams['heads']}) must divide width ({hparams['width']})")


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers of ``sizes`` with ReLUs between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class ContextLearner(EpisodicLearner):
    """An episodic learner whose network reads embedded (input, target) pairs of the support set at once."""

    batched = True
    hyperparameters = CONTEXT_HPARAMS
    sequential: ClassVar[bool] = False  # reads the support in order (SNAIL, MANN): training shuffles it

    def __init__(self, backbone: nn.Module, hparams: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(backbone, hparams, **kwargs)
        # Training's random draws (support orders, context subsets), seeded from torch's global stream.
        self.generator = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))

    def make_extras(self) -> dict[str, nn.Parameter]:
        """The task head, from the network's width (``network.width``, else ``width``) to predictions: logits over
        the ways, or the target's values (``backbone.outputs`` of them, ``build_network``'s ``output_size``)."""
        probe = next(iter(self.params.values()))
        head = nn.Linear(getattr(self.backbone, "width", None) or self.hparams["width"], self.head_size())
        return {"head.weight": nn.Parameter(head.weight.detach().to(probe)),
                "head.bias": nn.Parameter(head.bias.detach().to(probe))}

    def head_size(self) -> int:
        """How many numbers the head gives per query: the target's values, or a logit per way."""
        return int(self.backbone.outputs)

    def head(self, meta: Params, hidden: Tensor) -> Tensor:
        """The task head on the network's last features."""
        return F.linear(hidden, meta["head.weight"], meta["head.bias"])

    def shuffled(self, batch: TaskBatch) -> TaskBatch:
        """For a sequential learner in training, each task's support in a random order (else ``batch`` as it is)."""
        if not (self.sequential and torch.is_grad_enabled()):
            return batch
        order = torch.rand(batch.support_x.shape[:2], generator=self.generator).argsort(1).to(batch.support_x.device)

        def pick(t: Tensor) -> Tensor:
            return t.gather(1, order.view(*order.shape, *[1] * (t.dim() - 2)).expand_as(t))

        return TaskBatch(pick(batch.support_x), pick(batch.support_y), batch.query_x, batch.query_y)

    def embed_episodes(self, meta: Params, x: Tensor) -> Tensor:
        """Embeddings ``[tasks, n, width]`` of inputs ``[tasks, n, ...]``, each episode's on its own: ``vmap``, or
        on the CPU a convolutional embedding episode by episode, channels-last (as the metric learners run)."""
        if loops_tasks(self.backbone.get_submodule("embed"), x.device) and not self.force_vmap:
            fast = channels_last(meta)
            return torch.stack([self.call("embed", fast, xs).flatten(1) for xs in x])
        return vmap(lambda xs: self.call("embed", meta, xs).flatten(1))(x)

    def target_features(self, y: Tensor, n_way: int | None) -> Tensor:
        """Targets ``[tasks, n]`` or ``[tasks, n, d]`` as features ``[tasks, n, d]`` (class labels one-hot)."""
        if self.task_kind == "classification":
            return F.one_hot(y.long(), n_way).to(self.head_dtype)
        return y.to(self.head_dtype)

    @property
    def head_dtype(self) -> torch.dtype:
        """The dtype of the network's parameters."""
        return next(iter(self.params.values())).dtype

    def episode_predictions(self, meta: Params, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                            n_way: int | None) -> Tensor:
        """One episode's query predictions: the batched network on a batch of one."""
        one = TaskBatch(support_x[None], support_y[None], query_x[None], query_x.new_zeros(query_x.shape[:1])[None])
        return self.batch_predictions(meta, one)[0]
