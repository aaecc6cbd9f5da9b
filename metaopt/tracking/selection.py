"""Choosing a family's champion: candidates re-scored on the same held-out test tasks as the current champion.

The alias ``champion`` of ``metaopt-<family>`` moves only when the best candidate's
test loss is lower than the champion's beyond noise: the 95% confidence interval of
their paired per-task difference lies wholly below zero.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from metaopt.search.config import Job
from metaopt.search.evaluation import TEST_SEED, evaluate_tasks, mean_ci
from metaopt.tracking.leaderboard import leaderboard
from metaopt.tracking.models import load_learner
from metaopt.tracking.store import registered_model_name, resolve_tracking_uri

CHAMPION_ALIAS = "champion"


@dataclass
class Scored:
    """A trial's model scored on the test tasks."""

    method: str
    run_id: str
    test_loss: float
    test_loss_ci95: float
    test_accuracy: float | None = None
    per_task: list[float] = field(default_factory=list, repr=False)


@dataclass
class Selection:
    """What ``select_champion`` found and did."""

    family: str
    test_tasks: int
    candidates: list[Scored]
    best: Scored | None
    champion: Scored | None  # the champion before selection
    difference: tuple[float, float] | None  # best - champion: mean and 95% CI half-width, per task
    moved: bool
    reason: str
    version: str | None = None


def select_champion(
    family: str,
    *,
    tracking_uri: str | None = None,
    run_ids: list[str] | None = None,
    test_tasks: int | None = None,
    apply: bool = True,
) -> Selection:
    """Re-score ``run_ids`` (default: each method's best trial over all searches) and the champion; maybe move it."""
    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    if run_ids is None:
        run_ids = [row.run_id for row in leaderboard(family, tracking_uri=uri) if row.run_id]
    if not run_ids:
        raise LookupError(f"no finished trial of family {family!r} to select from in {uri}")
    name = registered_model_name(family)
    champion_run = _champion_run(client, name)
    job = _job_of(client, champion_run or run_ids[0])
    n_tasks = test_tasks or job.budget.test_tasks
    tasks = job.family.build().fixed_tasks(n_tasks, "test", seed=TEST_SEED)

    def score(run_id: str) -> Scored:
        run = client.get_run(run_id)
        per_task = evaluate_tasks(load_learner(run_id, tracking_uri=uri), tasks)
        mean, ci = mean_ci(per_task["loss"])
        accuracy = mean_ci(per_task["accuracy"])[0] if "accuracy" in per_task else None
        return Scored(run.data.tags.get("metaopt.method", "?"), run_id, mean, ci, accuracy, per_task["loss"].tolist())

    candidates = [score(run_id) for run_id in dict.fromkeys(run_ids)]
    best = min(candidates, key=lambda s: s.test_loss)
    champion = next((s for s in candidates if s.run_id == champion_run), None)
    if champion_run is not None and champion is None:
        champion = score(champion_run)
    selection = Selection(family, n_tasks, candidates, best, champion, None, False, "")
    if champion is None:
        selection.moved, selection.reason = True, "no champion yet"
    elif best.run_id == champion.run_id:
        selection.reason = "the champion is still the best"
    else:
        import torch

        diff = torch.tensor(best.per_task, dtype=torch.float64) - torch.tensor(champion.per_task, dtype=torch.float64)
        selection.difference = mean_ci(diff)
        mean, ci = selection.difference
        selection.moved = mean + ci < 0
        verdict = "beats" if selection.moved else "does not beat"
        selection.reason = (f"{best.method} {verdict} the champion ({champion.method}) beyond its CI: "
                            f"test loss difference {mean:+.4g} ± {ci:.2g}")
    if selection.moved and apply:
        selection.version = register(client, best.run_id, name)
    return selection


def register(client: MlflowClient, run_id: str, name: str) -> str:
    """Register the run's model under ``name`` and point the ``champion`` alias at the new version."""
    model_uri = client.get_run(run_id).data.tags.get("metaopt.model_uri", f"runs:/{run_id}/model")
    version = mlflow.register_model(model_uri, name)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
    return version.version


def _champion_run(client: MlflowClient, name: str) -> str | None:
    try:
        return client.get_model_version_by_alias(name, CHAMPION_ALIAS).run_id
    except MlflowException:
        return None


def _job_of(client: MlflowClient, trial_run_id: str) -> Job:
    """The job of the search a trial belongs to (its parent run keeps it as ``job/resolved_job.json``)."""
    parent = client.get_run(trial_run_id).data.tags.get("mlflow.parentRunId")
    if parent is None:
        raise LookupError(f"run {trial_run_id} is not a trial of a metaopt search")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(parent, "job/resolved_job.json", tmp))
        data = json.loads(path.read_text())
    data.pop("space", None)
    return Job.model_validate(data)
