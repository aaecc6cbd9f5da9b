"""MLflow tracking: runs per search and trial, a leaderboard and a champion model per key."""

from __future__ import annotations

from metaopt.tracking.leaderboard import Board, leaderboard, leaderboards
from metaopt.tracking.mlflow_tracker import MlflowSearchTracker, MlflowTrialTracker
from metaopt.tracking.models import load_learner
from metaopt.tracking.store import resolve_tracking_uri

__all__ = ["Board", "MlflowSearchTracker", "MlflowTrialTracker", "leaderboard", "leaderboards", "load_learner",
           "resolve_tracking_uri"]
