"""Meta-learning algorithms, one module each, on the shared functional core (``core.py``).

Another package adds a learner through the ``metaopt.learners`` entry-point group (``metaopt.plugins``).
"""

from __future__ import annotations

from metaopt.learners.anil import ANIL
from metaopt.learners.base import HParam, MetaLearner, Predictor
from metaopt.learners.classic_policies import CLASSIC_POLICIES
from metaopt.learners.cnp import CNP
from metaopt.learners.mann import MANN
from metaopt.learners.metanet import MetaNet
from metaopt.learners.anp import ANP
from metaopt.learners.snail import SNAIL
from metaopt.learners.estimators import ESTIMATORS
from metaopt.learners.fomaml import FOMAML
from metaopt.learners.gradient import GradientLearner
from metaopt.learners.hypergrad import HyperGrad
from metaopt.learners.icl import ICL
from metaopt.learners.maml import MAML
from metaopt.learners.mamlpp import MAMLPlusPlus
from metaopt.learners.melu import MeLU
from metaopt.learners.matchingnet import MatchingNet
from metaopt.learners.metacurvature import MetaCurvature
from metaopt.learners.metasgd import MetaSGD
from metaopt.learners.metric import MetricLearner
from metaopt.learners.pretrain import Pretrain
from metaopt.learners.protonet import ProtoNet
from metaopt.learners.rating_baselines import RATING_BASELINES
from metaopt.learners.relationnet import RelationNet
from metaopt.learners.reptile import Reptile
from metaopt.learners.rl2 import RL2
from metaopt.learners.scratch import Scratch
from metaopt.learners.siamese import Siamese
from metaopt.plugins import Registry
from metaopt.incontext.metaprompt import MetaPrompt
from metaopt.incontext.selectors import SELECTION_BASELINES

LEARNERS: Registry[MetaLearner] = Registry("metaopt.learners", {
    "maml": MAML,
    "fomaml": FOMAML,
    "mamlpp": MAMLPlusPlus,
    "reptile": Reptile,
    "anil": ANIL,
    "metasgd": MetaSGD,
    "metacurvature": MetaCurvature,
    "protonet": ProtoNet,
    "matchingnet": MatchingNet,
    "relationnet": RelationNet,
    "siamese": Siamese,
    "hypergrad": HyperGrad,
    "rl2": RL2,
    "scratch": Scratch,
    "pretrain": Pretrain,
    "melu": MeLU,
    "cnp": CNP,
    "icl": ICL,
    "snail": SNAIL,
    "mann": MANN,
    "metanet": MetaNet,
    "anp": ANP,
    "metaprompt": MetaPrompt,
    **{baseline.name: baseline for baseline in SELECTION_BASELINES},
    **{baseline.name: baseline for baseline in RATING_BASELINES},
    **{policy.name: policy for policy in CLASSIC_POLICIES},
    **{estimator.name: estimator for estimator in ESTIMATORS},
}, MetaLearner, "learner")



def is_baseline(method: str) -> bool:
    """Whether ``method`` is a baseline (what meta-learning must beat), not a meta-learner; False for one that
    does not load (a broken plugin)."""
    try:
        return LEARNERS[method].baseline
    except ValueError:
        return False


__all__ = [
    "ANIL",
    "CNP",
    "ICL",
    "FOMAML",
    "LEARNERS",
    "MAML",
    "MAMLPlusPlus",
    "MeLU",
    "MetaCurvature",
    "MetaLearner",
    "MatchingNet",
    "MetaSGD",
    "MetricLearner",
    "ProtoNet",
    "GradientLearner",
    "HParam",
    "HyperGrad",
    "Predictor",
    "Pretrain",
    "RelationNet",
    "RL2",
    "Reptile",
    "Scratch",
    "Siamese",
    "is_baseline",
]
