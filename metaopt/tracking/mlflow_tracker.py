"""The MLflow record of a search: a parent run per search, a child run per trial, the champion in the registry."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import optuna
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

import metaopt
from metaopt.search.evaluation import TaskScores
from metaopt.search.job import LoadedJob
from metaopt.search.reporting import ChampionRecord, TrackingError
from metaopt.search.results import SearchSummary
from metaopt.search.selection import Decision
from metaopt.search.trial import TrialResult, family_dataset
from metaopt.search.warm import REFINE_MAX, WarmPlan
from metaopt.tasks.metrics import Metric
from metaopt.tracking.board import write_board
from metaopt.tracking.champion import read_champion, record_scores, recorded_scores, register
from metaopt.tracking.descriptions import (
    best_so_far,
    leaderboard_table,
    progress_line,
    ranks,
    search_note,
    trial_line,
)
from metaopt.tracking.store import (
    NOTE_TAG,
    get_or_create_experiment,
    model_link,
    resolve_tracking_uri,
    run_link,
    ui_base,
)

# A pruned trial did its job (it lost early): FINISHED, with metaopt.state=pruned; interrupted ones end KILLED.
RUN_STATUS = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def _pip_requirements() -> list[str]:
    import torch

    return [f"metaopt=={metaopt.__version__}", f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"]


# predict's one parameter, `steps` (inner steps; None: the learner's own); MLflow drops params a signature lacks.
_PARAMS = ParamSchema([ParamSpec("steps", "long", None)])
CHECKPOINT = "checkpoint.pt"  # the checkpoint artifact's name in every run, so MLflow's compare view pairs them


def model_signature(example: dict[str, Any] | None) -> ModelSignature:
    """``support_x``, ``support_y``, ``query_x`` as tensors of the example's dtypes and shapes (any count), ``steps``."""
    if not example:
        return ModelSignature(params=_PARAMS)
    inputs = Schema([TensorSpec(value.dtype, (-1, *value.shape[1:]), name) for name, value in example.items()])
    return ModelSignature(inputs=inputs, params=_PARAMS)


def log_family_dataset(client: MlflowClient, run_id: str, name: str, digest: str, source: dict[str, str]) -> None:
    """The task family as ``run_id``'s training dataset; the experiment's one dataset row, made by whoever comes first.

    MLflow checks for the row, then inserts it: two runs of one experiment logging the same
    dataset at once can both miss it, and the later insert fails its unique constraint. The
    row is there after such a failure, so one retry links to it.
    """
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dataset = MetaDataset(CodeDatasetSource(source), name=name, digest=digest)._to_mlflow_entity()
    inputs = [DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException as exc:
        if "UNIQUE" not in str(exc).upper() and "IntegrityError" not in str(exc):
            raise
        client.log_inputs(run_id, datasets=inputs)


class MlflowTrialLog:
    """A trial's child run (opened on the worker)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.model_id: str | None = None
        self._logged: dict[str, tuple[float, int, int]] = {}  # key -> (value, timestamp, step) last logged

    def log_params(self, params: dict[str, Any]) -> None:
        """Hyperparameters of the trial, numbers to 6 significant digits (full values: the report's trials.csv)."""
        mlflow.log_params({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in params.items()})

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags of the trial's run."""
        mlflow.set_tags(tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """A point of the validation and training curves."""
        timestamp = int(time.time() * 1000)
        mlflow.log_metrics(metrics, step=step, timestamp=timestamp)
        self._logged.update({k: (v, timestamp, step) for k, v in metrics.items()})

    def log_artifact(self, path: Path, folder: str) -> None:
        """A file of the trial (a figure)."""
        mlflow.log_artifact(str(path), artifact_path=folder)

    def log_dataset(self, name: str, digest: str, source: dict[str, str]) -> None:
        """The task family the trial trained on, as the run's input dataset (MLflow's Dataset column and filter)."""
        log_family_dataset(MlflowClient(), self.run_id, name, digest, source)

    def log_model(self, checkpoint_path: Path, *, full: bool, example: dict[str, Any] | None = None,
                  metrics: dict[str, float] | None = None) -> None:
        """The checkpoint as ``checkpoint/checkpoint.pt``; for finished trials also an MLflow model, named after the run.

        The model gets a tensor signature and ``example`` (one task) as its input example, and
        ``metrics`` (the last validation scores) linked to it.
        """
        with tempfile.TemporaryDirectory() as tmp:
            fixed = Path(tmp) / CHECKPOINT
            shutil.copyfile(checkpoint_path, fixed)
            mlflow.log_artifact(str(fixed), artifact_path="checkpoint")
            if not full:
                return
            run = mlflow.active_run()
            info = mlflow.pyfunc.log_model(
                name=run.info.run_name if run is not None else "model",
                python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                artifacts={"checkpoint": str(fixed)},
                signature=model_signature(example),
                input_example=example,
                pip_requirements=_pip_requirements(),
            )
        self.model_id = info.model_id
        mlflow.set_tag("metaopt.model_uri", info.model_uri)
        self._link(metrics or {}, info.model_id)

    def _link(self, metrics: dict[str, float], model_id: str) -> None:
        """Link the last scores to the model: the same points again (same value, time, step), so no curve grows."""
        from mlflow.entities import Metric as MetricPoint

        points = []
        for key, value in metrics.items():
            logged_value, timestamp, step = self._logged.get(key, (value, int(time.time() * 1000), 0))
            if logged_value == value:
                points.append(MetricPoint(key, value, timestamp, step, model_id=model_id))
        if points:
            MlflowClient().log_batch(self.run_id, metrics=points)

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
        """The child run ``run_id`` (reopened), or a new one; ended FINISHED (finished or pruned) or FAILED."""
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
        self.source: dict[str, str] = {}
        self._logged_steps: dict[str, set[int]] = {}  # best-so-far series: steps the parent run holds

    def start_search(self, search_id: str, loaded: LoadedJob) -> str:
        """Create the parent run (in the experiment of the job's key) with the job's settings and files."""
        job = loaded.job
        key = job.family.key
        self.experiment_id = get_or_create_experiment(self.client, key, job.family.name, job.family.primary_metric,
                                                      limit=job.limit_method)
        run = self.client.create_run(
            self.experiment_id,
            run_name=search_id,
            tags={"metaopt.role": "search", "metaopt.search_id": search_id, "metaopt.family": job.family.name,
                  "metaopt.key": key, "metaopt.strategy": job.strategy, "metaopt.kind": job.family.build_kind(),
                  **self._source(loaded),
                  NOTE_TAG: f"Search {search_id} of `{key}`: running ({job.budget.trials} trials planned)."},
        )
        self.parent_run_id, self.source = run.info.run_id, self._source(loaded)
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
        # Before any trial: workers then find the experiment's dataset row instead of racing to insert it.
        log_family_dataset(self.client, self.parent_run_id, *family_dataset(job))
        if loaded.path.is_file():
            self.client.log_artifact(self.parent_run_id, str(loaded.path), artifact_path="job")
        else:  # a job given as data (``metaopt.run({...})``): what it said, as YAML
            import yaml

            self.client.log_text(self.parent_run_id, yaml.safe_dump(job.model_dump(mode="json"), sort_keys=False),
                                 "job/job.yaml")
        with tempfile.TemporaryDirectory() as tmp:
            space_file = Path(tmp) / "resolved_job.json"
            space_file.write_text(json.dumps({**job.model_dump(mode="json"), "space": loaded.space.to_data()}, indent=2))
            self.client.log_artifact(self.parent_run_id, str(space_file), artifact_path="job")
        return self.parent_run_id

    @staticmethod
    def _source(loaded: LoadedJob) -> dict[str, str]:
        """MLflow's Source column: the job file."""
        return {"mlflow.source.name": str(loaded.path), "mlflow.source.type": "LOCAL"}

    def create_trial_run(self, tags: dict[str, str], run_name: str) -> str:
        """A child run for a trial about to start, so a retry or a resumed search reopens the same one."""
        assert self.experiment_id is not None and self.parent_run_id is not None, "start_search first"
        tags = {"mlflow.parentRunId": self.parent_run_id, **tags, **self.source}  # a seed run names its trial's run
        return self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id

    def resume_search(self, search_id: str, parent_run_id: str, loaded: LoadedJob) -> str:
        """Reopen the parent run of an interrupted search."""
        run = self.client.get_run(parent_run_id)
        if run.data.tags.get("metaopt.search_id") != search_id:
            raise LookupError(f"MLflow run {parent_run_id} is not the parent run of search {search_id}")
        self.parent_run_id, self.experiment_id = parent_run_id, run.info.experiment_id
        self.source = self._source(loaded)
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
        self.source = self._source(loaded)

    def trial_tracker(self) -> MlflowTrialTracker:
        """What workers use to open child runs."""
        assert self.experiment_id is not None and self.parent_run_id is not None, "start_search first"
        return MlflowTrialTracker(self.tracking_uri, self.experiment_id, self.parent_run_id)

    def record_test(self, run_id: str, scores: TaskScores) -> None:
        """Test-task scores on the trial's run: the summary as metrics, every task's score as ``test/scores.json``."""
        record_scores(self.client, run_id, scores)

    def seed_scores(self, seed_of: str, training_seed: int) -> TaskScores | None:
        """A finished seed run's recorded test scores; a run of that seed left unfinished or unscored by a stopped
        driver ends FAILED (trained again), said why."""
        if self.experiment_id is None:
            return None
        runs = self.client.search_runs([self.experiment_id], "tags.`metaopt.role` = 'seed' and "
                                       f"tags.`metaopt.seed_of` = '{seed_of}' and "
                                       f"tags.`metaopt.training_seed` = '{training_seed}'")
        found = None
        for run in runs:
            scores = recorded_scores(self.client, run.info.run_id) if run.info.status == "FINISHED" else None
            if scores is not None and found is None:
                found = scores
            elif run.info.status in ("RUNNING", "FINISHED"):
                self.end_trial(run.info.run_id, "failed", "its search's driver stopped before this seed was scored; "
                                                          "resume trained it again")
        return found

    def champion(self, key: str) -> ChampionRecord | None:
        """The key's champion (``metaopt-<key>@champion``) and its recorded scores; None if there is none yet."""
        return read_champion(self.client, key)

    def record_decision(self, decision: Decision) -> str | None:
        """The decision as tags of the parent run; a new champion registered and aliased (its version returned)."""
        try:
            version = None
            if decision.moved and decision.best is not None and decision.best.run_id:
                version = register(self.client, decision.best.run_id, decision.key, decision.reason,
                                   metric=decision.metric, search_id=self._search_id())
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

    def warm_start(self, loaded: LoadedJob) -> WarmPlan:
        """The nearest keys' best configurations (``history``), at most a quarter of the budget in two rounds (a
        misleading source costs the first round's few trials, then the sampler goes its own way), then local steps on
        the new key (``warm.refine``); the sources are the parent run's tag ``metaopt.warm_start``."""
        from metaopt.tracking.history import sources, warm_plan

        job = loaded.job
        keys = None if job.warm_start == "auto" else list(job.warm_start)
        found = sources(self.client, job.family.name, job.family.build_kind(), job.family.options.model_dump(), keys)
        plan = warm_plan(found, loaded.space, limit=max(1, job.budget.trials // 4))
        said = ("; ".join(origin for _, origin in plan.first)
                or f"no finished search of a near key in {self.tracking_uri}")
        if plan.more and plan.limit > len(plan.first):
            said += (f"; then up to {plan.limit - len(plan.first)} more of the method that scores best of these, from "
                     f"{len(plan.more)} candidates")
        if plan.first:
            said += f"; then up to {REFINE_MAX} local steps here, while they make progress"
        self.record_warm(said)
        return plan

    def record_warm(self, said: str) -> None:
        """Where the warm start's configurations came from, on the parent run (``metaopt.warm_start``)."""
        if self.parent_run_id is not None:
            self.client.set_tag(self.parent_run_id, "metaopt.warm_start", said[:5000])

    def record_progress(self, results: list[TrialResult], planned: int, metric: Metric, eta_s: float | None) -> None:
        """The parent run's description and ``metaopt.progress`` tag say where the search stands, and its best-so-far
        series grows as trials finish. A tracking hiccup here is a warning: the trials keep their own records."""
        if self.parent_run_id is None:
            return
        line = progress_line(results, planned, metric, eta_s)
        try:
            self.client.set_tag(self.parent_run_id, "metaopt.progress", line)
            self.client.set_tag(self.parent_run_id, NOTE_TAG, f"**Running**: {line}.")
            self._log_series(best_so_far(results, metric))
        except Exception as exc:  # noqa: BLE001 - progress is a courtesy, never a reason to stop
            warnings.warn(f"progress not recorded in MLflow: {type(exc).__name__}: {str(exc)[:200]}", stacklevel=2)

    def _log_series(self, series: dict[str, list[tuple[int, float]]]) -> None:
        """The points of ``series`` the parent run does not hold yet (one point per step, whichever driver logs it)."""
        for name, points in series.items():
            if name not in self._logged_steps:
                self._logged_steps[name] = {m.step for m in self.client.get_metric_history(self.parent_run_id, name)}
            for step, value in points:
                if step not in self._logged_steps[name]:
                    self.client.log_metric(self.parent_run_id, name, value, step=step)
                    self._logged_steps[name].add(step)

    def _search_id(self) -> str | None:
        return self.client.get_run(self.parent_run_id).data.tags.get("metaopt.search_id") if self.parent_run_id else None

    def finish_search(self, summary: SearchSummary, status: str) -> None:
        """The parent run's story (description, best-so-far series, leaderboard, report) and each trial's line."""
        if self.parent_run_id is None:
            return
        run_id = self.parent_run_id
        if status == "SHARED":  # another driver of the search finishes the record
            return
        counts = {state: sum(r.state == state for r in summary.results) for state in ("complete", "pruned", "failed")}
        tags = {f"metaopt.trials.{state}": str(n) for state, n in counts.items()}
        tags["metaopt.seconds"] = f"{summary.seconds:.1f}"
        self._log_series(best_so_far(summary.results, summary.metric))
        with tempfile.TemporaryDirectory() as tmp:
            board = Path(tmp) / "leaderboard.json"
            board.write_text(json.dumps([asdict(row) for row in summary.rows], indent=2, default=str))
            self.client.log_artifact(run_id, str(board))
            self.client.log_table(run_id, data=leaderboard_table(summary), artifact_file="leaderboard_table.json")
            self._log_report(summary, Path(tmp) / "report")
        if summary.champion is not None:
            champ, name = summary.champion, summary.metric.name
            tags["metaopt.champion_method"] = champ.method
            tags["metaopt.champion_run_id"] = champ.run_id or ""
            test = champ.test_mean(name)
            if test is not None and math.isfinite(test):
                self.client.log_metric(run_id, f"champion_test_{name}", test)
        for note in summary.notes:
            tags["metaopt.champion_decision"] = note[:5000]
        if summary.interrupted:
            tags["metaopt.interrupted"] = f"{summary.interrupted}; continue with: metaopt resume {summary.search_id}"
        base = ui_base(self.tracking_uri)
        if summary.verdict:
            tags["metaopt.verdict"] = summary.verdict
        tags[NOTE_TAG] = search_note(summary, run_url=lambda rid: run_link(base, self.experiment_id, rid),
                                     model_url=lambda model, version: model_link(base, model, version))
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)
        rank = ranks(summary)
        for result in summary.results:
            if result.run_id:
                self.client.set_tag(result.run_id, NOTE_TAG, trial_line(result, summary, rank.get(result.number)))
        if status == "FINISHED" and summary.key:
            try:  # the key's landing page: champion and limit labelled and first, scores with CIs, settings
                write_board(self.client, summary.key)
            except Exception as exc:  # noqa: BLE001 - the search's own record is whole without it
                warnings.warn(f"the runs table of {summary.key} was not relabelled: {type(exc).__name__}: "
                              f"{str(exc)[:200]} (metaopt select {summary.key} does it again)", stacklevel=2)
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
