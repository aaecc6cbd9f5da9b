"""MeLU (Lee et al., KDD 2019): meta-learned user preference, each user a task, a local update of the decision layers.

MAML on the ``melu`` network (feature embeddings, then decision layers): the local (inner)
update adapts the decision layers only, on the user's support ratings; the global (outer)
update trains everything on their query ratings. MeLU-1 and MeLU-5 are ``inner_steps`` 1 and
5. Second order, as the paper. Whatever backbone the job names, MeLU trains its own network
(a ``melu`` backbone in the job sets its widths).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from metaopt.learners.maml import MAML


class MeLU(MAML):
    """MAML on MeLU's network whose inner loop adapts the decision layers only."""

    name: ClassVar[str] = "melu"
    task_kinds: ClassVar[tuple[str, ...]] = ("rating",)
    families: ClassVar[tuple[str, ...]] = ("movielens",)

    @classmethod
    def build_network(cls, backbone: dict[str, Any], *, input_shape: tuple[int, ...], output_size: int,
                      hparams: dict[str, Any]) -> nn.Module:
        """MeLU's network: the job's backbone when it is ``melu``, else the paper's widths (32, 64-64)."""
        from metaopt.models import build_backbone

        spec = backbone if backbone.get("name") == "melu" else {"name": "melu"}
        return build_backbone(spec, input_shape=tuple(input_shape), out_features=output_size)

    def adapted_names(self) -> frozenset[str]:
        """The decision layers' parameters."""
        return frozenset(name for name in self.params if name.startswith("decision."))
