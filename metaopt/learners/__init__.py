"""Meta-learning algorithms, one module each, on the shared functional core (``core.py``)."""

from __future__ import annotations

from metaopt.learners.base import HParam, MetaLearner, Predictor
from metaopt.learners.fomaml import FOMAML
from metaopt.learners.gradient import GradientLearner
from metaopt.learners.maml import MAML
from metaopt.learners.reptile import Reptile

LEARNERS: dict[str, type[MetaLearner]] = {"maml": MAML, "fomaml": FOMAML, "reptile": Reptile}

__all__ = ["FOMAML", "LEARNERS", "MAML", "GradientLearner", "HParam", "MetaLearner", "Predictor", "Reptile"]
