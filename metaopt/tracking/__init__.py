"""MLflow tracking: runs per search and trial, the leaderboard, the champion model."""

from __future__ import annotations

from metaopt.tracking.leaderboard import leaderboard
from metaopt.tracking.mlflow_tracker import MlflowSearchTracker, MlflowTrialTracker
from metaopt.tracking.models import load_learner
from metaopt.tracking.store import resolve_tracking_uri

__all__ = ["MlflowSearchTracker", "MlflowTrialTracker", "leaderboard", "load_learner", "resolve_tracking_uri"]
