"""ANIL: Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals, ICLR 2020).

Inner loop, per task i:  only the head adapts,  h_i = h - alpha * grad_h L_support_i(body, h)
Outer loop:              body and head <- Adam(grad_(body, h) mean_i L_query_i(body, h_i))
The body is trained by the outer loop (its gradient flows through the head's
adaptation), never frozen; the head is the backbone's last layer with parameters.
"""

from __future__ import annotations

from metaopt.learners.gradient import GradientLearner, head_names


class ANIL(GradientLearner):
    """MAML whose inner loop adapts the head only."""

    name = "anil"

    def adapted_names(self) -> frozenset[str]:
        """The head's parameters."""
        return head_names(self.backbone)
