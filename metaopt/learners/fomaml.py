"""First-order MAML (Finn et al. 2017, section 5.2).

Same update as MAML, but the inner gradients are treated as constants, so the
meta-gradient is the query-loss gradient at the adapted parameters:
    theta <- Adam(theta, mean_i grad_phi L_query_i(phi_i))
"""

from __future__ import annotations

from metaopt.learners.maml import MAML


class FOMAML(MAML):
    """MAML without second-order terms."""

    name = "fomaml"
    first_order = True
