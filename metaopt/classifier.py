"""``FewShotClassifier``: the seed's public API, a thin wrapper over a (trained) meta-learner."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from metaopt.learners.base import MetaLearner


class FewShotClassifier:
    """Classify queries from an N-way K-shot support set with any metaopt learner.

    Example:
        >>> clf = FewShotClassifier("conv4", "protonet", n_way=5, k_shot=1)     # a fresh learner
        >>> clf = FewShotClassifier.load("models:/metaopt-glyphs-5w1s-q5@champion")  # or a trained one
        >>> labels = clf.adapt_and_predict(support_x, support_y, query_x)
    """

    def __init__(
        self,
        backbone: str | dict[str, Any] = "conv4",
        method: str = "protonet",
        n_way: int = 5,
        k_shot: int = 1,
        *,
        input_shape: tuple[int, ...] = (1, 28, 28),
        hparams: dict[str, Any] | None = None,
        learner: MetaLearner | None = None,
    ) -> None:
        from metaopt.learners.checkpoint import build_learner

        spec = {"name": backbone} if isinstance(backbone, str) else dict(backbone)
        self.learner = learner or build_learner(
            method, hparams or {}, backbone=spec, task_kind="classification", input_shape=input_shape,
            output_size=n_way, n_way=n_way,
        )
        if self.learner.task_kind != "classification":
            raise ValueError(f"{self.learner.name} was trained for {self.learner.task_kind}, not classification")
        self.n_way, self.k_shot = n_way, k_shot

    @classmethod
    def load(cls, uri: str, k_shot: int = 1) -> FewShotClassifier:
        """Wrap the learner ``metaopt.load(uri)`` returns."""
        from metaopt.tracking.models import load_learner

        learner = load_learner(uri)
        return cls(method=learner.name, n_way=learner.n_way or 5, k_shot=k_shot, learner=learner)

    def logits(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """Query logits ``[queries, n_way]`` after adapting to the support set."""
        expected = self.n_way * self.k_shot
        if support_x.shape[0] != expected or support_y.shape != (expected,):
            raise ValueError(
                f"support set must hold n_way*k_shot = {expected} examples with labels of shape ({expected},), "
                f"got {tuple(support_x.shape)} and {tuple(support_y.shape)}"
            )
        if support_y.min() < 0 or support_y.max() >= self.n_way:
            raise ValueError(f"support labels must lie in 0..{self.n_way - 1}")
        return self.learner.adapt(support_x, support_y.long())(query_x)

    def adapt_and_predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """Predicted labels ``[queries]`` for ``query_x``."""
        with torch.no_grad():
            return self.logits(support_x, support_y, query_x).argmax(-1)
