"""A key's leaderboard, read back from MLflow: each method's best trial by validation, scored on test tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlflow.tracking import MlflowClient

from metaopt.search.results import MethodRow, rank
from metaopt.tasks.metrics import Metric
from metaopt.tracking.store import KeyExperiment, key_experiments, resolve_tracking_uri

@dataclass
class Board:
    """The leaderboard of one key."""

    key: str
    family: str
    metrics: tuple[Metric, ...]  # the primary one first: what validation ranks by and the champion decision tests
    rows: list[MethodRow]
    legacy: bool = False  # a store written before keys: one experiment per family, settings mixed
    limit: str | None = None  # the method that is the family's exact limit: a reference row, never the champion

    @property
    def metric(self) -> Metric:
        """The primary metric."""
        return self.metrics[0]


def leaderboards(name: str, *, tracking_uri: str | None = None, search_id: str | None = None) -> list[Board]:
    """One board per key ``name`` stands for (a key, or every key of a family name), best validation first."""
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    experiments = key_experiments(client, name)
    if not experiments:
        raise LookupError(f"no searches recorded for {name!r} in {client.tracking_uri}")
    return [_board(client, experiment, search_id) for experiment in experiments]


def leaderboard(name: str, *, tracking_uri: str | None = None, search_id: str | None = None) -> list[MethodRow]:
    """The rows of the one board ``name`` stands for (a key, or a family name with a single key)."""
    boards = leaderboards(name, tracking_uri=tracking_uri, search_id=search_id)
    if len(boards) > 1:
        raise LookupError(f"{name!r} has several keys ({', '.join(b.key for b in boards)}): name one")
    return boards[0].rows


def _board(client: MlflowClient, experiment: KeyExperiment, search_id: str | None) -> Board:
    metric = experiment.metric
    val, test = f"val_{metric.name}", f"test_{metric.name}"
    query = "tags.`metaopt.role` = 'trial'"
    if search_id:
        query += f" AND tags.`metaopt.search_id` = '{search_id}'"
    rows: dict[str, MethodRow] = {}
    for run in all_runs(client, experiment.experiment_id, query):
        tags, metrics = run.data.tags, run.data.metrics
        row = rows.setdefault(tags.get("metaopt.method", "?"), MethodRow(tags.get("metaopt.method", "?")))
        state = tags.get("metaopt.state", "failed")
        row.count(state)
        # Only the best trial of each search per method is scored on test tasks, and the
        # best validation trial overall is always one of those.
        if state == "complete" and test in metrics and val in metrics:
            scored = {k: v for k, v in metrics.items() if k.startswith("test_")}
            if "metaopt.test_tasks" in tags:  # a count: a tag, not a metric to chart
                scored["test_tasks"] = float(tags["metaopt.test_tasks"])
            row.offer(metrics[val], metric, test=scored, trial_number=int(tags.get("metaopt.trial_number", -1)),
                      run_id=run.info.run_id, strategy=tags.get("metaopt.strategy"), hparams=dict(run.data.params))
    return Board(experiment.key, experiment.family, experiment.metrics, rank(list(rows.values()), metric),
                 experiment.legacy, experiment.limit)


def all_runs(client: MlflowClient, experiment_id: str, query: str) -> list[Any]:
    """Every run of an experiment that ``query`` selects (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs
