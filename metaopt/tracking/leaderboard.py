"""The leaderboard of a task family, read back from MLflow: best method by validation, scored on test tasks."""

from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient

from metaopt.search.runner import MethodRow
from metaopt.tracking.store import experiment_name, resolve_tracking_uri

STATES = ("complete", "pruned", "failed")


def leaderboard(family: str, *, tracking_uri: str | None = None, search_id: str | None = None) -> list[MethodRow]:
    """One row per method over every search of ``family`` (or one search), best validation loss first."""
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    experiment = client.get_experiment_by_name(experiment_name(family))
    if experiment is None:
        raise LookupError(f"no searches recorded for family {family!r} in {client.tracking_uri}")
    query = "tags.`metaopt.role` = 'trial'"
    if search_id:
        query += f" AND tags.`metaopt.search_id` = '{search_id}'"
    rows: dict[str, MethodRow] = {}
    for run in _all_runs(client, experiment.experiment_id, query):
        tags, metrics = run.data.tags, run.data.metrics
        method = tags.get("metaopt.method", "?")
        row = rows.setdefault(method, MethodRow(method))
        state = tags.get("metaopt.state", "failed")
        if state in STATES:
            setattr(row, state, getattr(row, state) + 1)
        # Only the best trial of each search per method is scored on test tasks, and the
        # best validation trial overall is always one of those.
        if state == "complete" and "test_loss" in metrics and "val_loss" in metrics:
            if row.best_val is None or metrics["val_loss"] < row.best_val:
                row.best_val = metrics["val_loss"]
                row.test_loss, row.test_loss_ci95 = metrics["test_loss"], metrics.get("test_loss_ci95")
                row.test_accuracy = metrics.get("test_accuracy")
                row.test_accuracy_ci95 = metrics.get("test_accuracy_ci95")
                row.trial_number = int(tags.get("metaopt.trial_number", -1))
                row.run_id = run.info.run_id
                row.strategy = tags.get("metaopt.strategy")
                row.hparams = dict(run.data.params)
    return sorted(rows.values(), key=lambda row: (row.best_val is None, row.best_val or 0.0))


def _all_runs(client: MlflowClient, experiment_id: str, query: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
