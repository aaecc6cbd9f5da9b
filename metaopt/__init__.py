"""metaopt: choose and tune meta-learners with Optuna on Ray, tracked in MLflow.

``metaopt.run(job)`` runs a search from Python (``metaopt.api``); ``metaopt.load(uri)`` loads a trained learner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from metaopt.learners.base import MetaLearner


def load(uri: str) -> "MetaLearner":
    """Load a trained meta-learner from ``models:/name@alias``, a logged model (``models:/m-...``), a run id or a path.

    Example:
        >>> learner = metaopt.load("models:/metaopt-sine-10shot@champion")
        >>> predict = learner.adapt(support_x, support_y)
        >>> y = predict(query_x)
    """
    from metaopt.tracking.models import load_learner

    return load_learner(uri)


def __getattr__(name: str):  # noqa: ANN202 - lazy, so `import metaopt` stays light
    if name == "FewShotClassifier":
        from metaopt.classifier import FewShotClassifier

        return FewShotClassifier
    if name in {"run", "register_family", "register_learner"}:
        from metaopt import api

        return getattr(api, name)
    raise AttributeError(f"module 'metaopt' has no attribute {name!r}")


__all__ = ["FewShotClassifier", "load", "register_family", "register_learner", "run", "__version__"]
