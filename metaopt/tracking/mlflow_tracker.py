"""The MLflow record of a search: a parent run per search, a child run per trial, the champion in the registry."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ParamSchema, ParamSpec

import metaopt
from metaopt.search.evaluation import TaskScores
from metaopt.search.job import LoadedJob
from metaopt.search.reporting import ChampionRecord, TrackingError
from metaopt.search.results import SearchSummary
from metaopt.search.selection import Decision
from metaopt.tracking.champion import read_champion, record_scores, register
from metaopt.tracking.store import get_or_create_experiment, resolve_tracking_uri

RUN_STATUS = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}


def _pip_requirements() -> list[str]:
    import torch

    return [f"metaopt=={metaopt.__version__}", f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]


# predict's one parameter, `steps` (inner steps; None: the learner's own); MLflow drops params a signature lacks.
_SIGNATURE = ModelSignature(params=ParamSchema([ParamSpec("steps", "long", None)]))


class MlflowTrialLog:
    """A trial's child run (opened on the worker)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Hyperparameters of the trial."""
        mlflow.log_params(params)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags of the trial's run."""
        mlflow.set_tags(tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """A point of the validation and training curves."""
        mlflow.log_metrics(metrics, step=step)

    def log_artifact(self, path: Path, folder: str) -> None:
        """A file of the trial (a figure)."""
        mlflow.log_artifact(str(path), artifact_path=folder)

    def log_model(self, checkpoint_path: Path, *, full: bool) -> None:
        """The checkpoint as an artifact; for finished trials also an MLflow model that can be registered."""
        mlflow.log_artifact(str(checkpoint_path), artifact_path="checkpoint")
        if full:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                artifacts={"checkpoint": str(checkpoint_path)},
                signature=_SIGNATURE,
                pip_requirements=_pip_requirements(),
            )
            mlflow.set_tag("metaopt.model_uri", info.model_uri)

    def finish(self, state: str, reason: str | None) -> None:
        """Tag how the trial ended."""
        mlflow.set_tag("metaopt.state", state)
        if reason:
            mlflow.set_tag("metaopt.reason", reason[:5000])


class MlflowTrialTracker:
    """Opens child runs under ``parent_run_id``; holds only strings, so it pickles to Ray workers."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str) -> None:
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id

    @contextlib.contextmanager
    def open_trial(self, tags: dict[str, str], run_name: str, run_id: str | None = None) -> Iterator[MlflowTrialLog]:
        """The child run ``run_id`` (reopened), or a new one; ended with FINISHED, KILLED (pruned) or FAILED."""
        mlflow.set_tracking_uri(self.tracking_uri)
        if run_id is not None:
            run = mlflow.start_run(run_id=run_id)
        else:
            run = mlflow.start_run(
                experiment_id=self.experiment_id, run_name=run_name, parent_run_id=self.parent_run_id, tags=tags
            )
        status = "FAILED"
        try:
            log = MlflowTrialLog(run.info.run_id)
            yield log
            state = mlflow.get_run(run.info.run_id).data.tags.get("metaopt.state", "failed")
            status = RUN_STATUS.get(state, "FAILED")
        finally:
            mlflow.end_run(status=status)


    def fetch_checkpoint(self, run_id: str) -> Path | None:
        """Download the trial's checkpoint artifact."""
        mlflow.set_tracking_uri(self.tracking_uri)
        local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoint"))
        found = sorted(local.glob("*.pt")) if local.is_dir() else [local]
        return found[0] if found else None


class MlflowSearchTracker:
    """Driver-side MLflow record: the parent run, test scores, the leaderboard, the champion the driver chose."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client = MlflowClient(self.tracking_uri)
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None

    def start_search(self, search_id: str, loaded: LoadedJob) -> str:
        """Create the parent run (in the experiment of the job's key) with the job's settings and files."""
        job = loaded.job
        key = job.family.key
        self.experiment_id = get_or_create_experiment(self.client, key, job.family.name, job.family.primary_metric)
        run = self.client.create_run(
            self.experiment_id,
            run_name=search_id,
            tags={"metaopt.role": "search", "metaopt.search_id": search_id, "metaopt.family": job.family.name,
                  "metaopt.key": key},
        )
        self.parent_run_id = run.info.run_id
        params = {
            "job": job.name,
            "family": job.family.name,
            "key": key,
            "methods": ",".join(job.methods),
            "strategy": job.strategy,
            "pruner": job.pruner.type,
            "seed": job.seed,
            **{f"family.{k}": v for k, v in job.family.options.model_dump().items()},
            **{f"budget.{k}": v for k, v in job.budget.model_dump().items()},
        }
        for key_, value in params.items():
            self.client.log_param(self.parent_run_id, key_, value)
        self.client.log_artifact(self.parent_run_id, str(loaded.path), artifact_path="job")
        with tempfile.TemporaryDirectory() as tmp:
            space_file = Path(tmp) / "resolved_job.json"
            space_file.write_text(json.dumps({**job.model_dump(mode="json"), "space": loaded.space.to_data()}, indent=2))
            self.client.log_artifact(self.parent_run_id, str(space_file), artifact_path="job")
        return self.parent_run_id

    def create_trial_run(self, tags: dict[str, str], run_name: str) -> str:
        """A child run for a trial about to start, so a retry or a resumed search reopens the same one."""
        assert self.experiment_id is not None and self.parent_run_id is not None, "start_search first"
        tags = {**tags, "mlflow.parentRunId": self.parent_run_id}
        return self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id

    def resume_search(self, search_id: str, parent_run_id: str, loaded: LoadedJob) -> str:
        """Reopen the parent run of an interrupted search."""
        run = self.client.get_run(parent_run_id)
        if run.data.tags.get("metaopt.search_id") != search_id:
            raise LookupError(f"MLflow run {parent_run_id} is not the parent run of search {search_id}")
        self.parent_run_id, self.experiment_id = parent_run_id, run.info.experiment_id
        self.client.update_run(parent_run_id, status="RUNNING")
        self.client.set_tag(parent_run_id, "metaopt.resumed", "true")
        return parent_run_id

    def join_search(self, search_id: str, parent_run_id: str | None, loaded: LoadedJob) -> None:
        """Use the parent run another driver of the search made (checked to be that search's)."""
        if parent_run_id is None:
            raise LookupError(f"search {search_id} has no MLflow parent run to join")
        run = self.client.get_run(parent_run_id)
        if run.data.tags.get("metaopt.search_id") != search_id:
            raise LookupError(f"MLflow run {parent_run_id} is not the parent run of search {search_id}")
        self.parent_run_id, self.experiment_id = parent_run_id, run.info.experiment_id

    def trial_tracker(self) -> MlflowTrialTracker:
        """What workers use to open child runs."""
        assert self.experiment_id is not None and self.parent_run_id is not None, "start_search first"
        return MlflowTrialTracker(self.tracking_uri, self.experiment_id, self.parent_run_id)

    def record_test(self, run_id: str, scores: TaskScores) -> None:
        """Test-task scores on the trial's run: the summary as metrics, every task's score as ``test/scores.json``."""
        record_scores(self.client, run_id, scores)

    def champion(self, key: str) -> ChampionRecord | None:
        """The key's champion (``metaopt-<key>@champion``) and its recorded scores; None if there is none yet."""
        return read_champion(self.client, key)

    def record_decision(self, decision: Decision) -> str | None:
        """The decision as tags of the parent run; a new champion registered and aliased (its version returned)."""
        try:
            version = None
            if decision.moved and decision.best is not None and decision.best.run_id:
                version = register(self.client, decision.best.run_id, decision.key, decision.reason)
            if self.parent_run_id is not None:
                self.client.set_tag(self.parent_run_id, "metaopt.champion_decision", decision.reason)
            return version
        except Exception as exc:  # noqa: BLE001 - reported by the driver; the alias is where it was
            raise TrackingError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc

    def end_trial(self, run_id: str, state: str, reason: str) -> None:
        """The trial's run ended with ``state`` and the reason: interrupted runs KILLED, lost ones FAILED."""
        self.client.set_tag(run_id, "metaopt.state", state)
        self.client.set_tag(run_id, "metaopt.reason", reason[:5000])
        self.client.set_terminated(run_id, status="KILLED" if state == "interrupted" else "FAILED")

    def finish_search(self, summary: SearchSummary, status: str) -> None:
        """Trial counts, the leaderboard and the report on the parent run; close it with ``status``."""
        if self.parent_run_id is None:
            return
        run_id = self.parent_run_id
        if status == "SHARED":  # another driver of the search finishes the record
            return
        counts = {state: sum(r.state == state for r in summary.results) for state in ("complete", "pruned", "failed")}
        for state, n in counts.items():
            self.client.log_metric(run_id, f"trials_{state}", n)
        self.client.log_metric(run_id, "search_seconds", summary.seconds)
        with tempfile.TemporaryDirectory() as tmp:
            board = Path(tmp) / "leaderboard.json"
            board.write_text(json.dumps([asdict(row) for row in summary.rows], indent=2, default=str))
            self.client.log_artifact(run_id, str(board))
            self._log_report(summary, Path(tmp) / "report")
        if summary.champion is not None:
            champ, name = summary.champion, summary.metric.name
            self.client.set_tag(run_id, "metaopt.champion_method", champ.method)
            self.client.set_tag(run_id, "metaopt.champion_run_id", champ.run_id or "")
            self.client.log_metric(run_id, f"best_val_{name}", champ.best_val)
            test = champ.test_mean(name)
            if test is not None and math.isfinite(test):
                self.client.log_metric(run_id, f"champion_test_{name}", test)
        for note in summary.notes:
            self.client.set_tag(run_id, "metaopt.champion_decision", note[:5000])
        if summary.interrupted:
            self.client.set_tag(run_id, "metaopt.interrupted",
                                f"{summary.interrupted}; continue with: metaopt resume {summary.search_id}")
        self.client.set_terminated(run_id, status=status)

    def _log_report(self, summary: SearchSummary, out: Path) -> None:
        """The trial table and the search's figures, under the parent run's ``report/``."""
        from metaopt.search.storage import open_storage
        from metaopt.tracking.plots import write_search_report

        study = None
        if summary.storage:
            with contextlib.suppress(KeyError):
                study = optuna.load_study(study_name=summary.search_id, storage=open_storage(summary.storage))

        objective = f"val_{summary.metric.name}"

        def curve(run_id: str) -> list[tuple[int, float]]:
            return [(m.step, m.value) for m in self.client.get_metric_history(run_id, objective)]

        for path in write_search_report(summary, study, curve, out):
            self.client.log_artifact(self.parent_run_id, str(path), artifact_path="report")
