"""MAML: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017).

Inner loop, per task i:   phi_i = theta - alpha * grad_theta L_support_i(theta)   (k steps)
Outer loop:               theta <- Adam(theta, grad_theta mean_i L_query_i(phi_i))
The meta-gradient is second order: it flows through the inner gradients.
On RL tasks the inner loss is a policy gradient (``maml_rl.py``).
"""

from __future__ import annotations

from metaopt.tasks.base import TaskKind
from metaopt.learners.base import MetaLearner
from metaopt.learners.gradient import GradientLearner


class MAML(GradientLearner):
    """Second-order MAML over a vmapped meta-batch."""

    name = "maml"
    first_order = False
    task_kinds = ("regression", "classification", "rating", "rl")

    @classmethod
    def for_task_kind(cls, task_kind: TaskKind) -> type[MetaLearner]:
        """On RL tasks, MAML with a policy-gradient inner step (first order as well, for ``fomaml``)."""
        if task_kind != "rl":
            return cls
        from metaopt.learners.maml_rl import ON_RL

        return ON_RL.get(cls.name, ON_RL["fomaml" if cls.first_order else "maml"])
