"""MAML: Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, ICML 2017).

Inner loop, per task i:   phi_i = theta - alpha * grad_theta L_support_i(theta)   (k steps)
Outer loop:               theta <- Adam(theta, grad_theta mean_i L_query_i(phi_i))
The meta-gradient is second order: it flows through the inner gradients.
"""

from __future__ import annotations

from metaopt.learners.gradient import GradientLearner


class MAML(GradientLearner):
    """Second-order MAML over a vmapped meta-batch."""

    name = "maml"
    first_order = False
