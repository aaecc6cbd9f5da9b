"""A key's champion in MLflow: the alias ``champion`` of the registered model ``metaopt-<key>``.

This module reads and records; ``metaopt.search.selection`` decides. Each scored
trial keeps its per-task test scores as the artifact ``test/scores.json``, so a
champion decision never scores a model twice: ``select_champion`` (``metaopt
select``) re-scores only runs whose scores are missing or on fewer tasks.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from metaopt.search.config import Job
from metaopt.search.evaluation import TaskScores, evaluate_test
from metaopt.search.reporting import ChampionRecord, TrackingError
from metaopt.search.conclusion import decide_champion
from metaopt.search.selection import Candidate, Decision
from metaopt.tasks.metrics import Metric
from metaopt.tracking.leaderboard import leaderboards
from metaopt.tracking.models import load_learner
from metaopt.tracking.store import registered_model_name, resolve_tracking_uri

CHAMPION_ALIAS = "champion"
SCORES_ARTIFACT = "test/scores.json"
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


def record_scores(client: MlflowClient, run_id: str, scores: TaskScores) -> None:
    """The summary as metrics of the run and of its model (``test_<metric>``, ``_ci95``) and every task's score.

    How many tasks is the tag ``metaopt.test_tasks`` (a count, not a score to chart).
    """
    model_uri = client.get_run(run_id).data.tags.get("metaopt.model_uri", "")
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    for name, value in scores.summary().items():
        if name == f"{scores.split}_tasks":
            client.set_tag(run_id, "metaopt.test_tasks", str(int(value)))
        else:
            client.log_metric(run_id, name, value, model_id=model_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(SCORES_ARTIFACT).name
        path.write_text(json.dumps(scores.to_data()))
        client.log_artifact(run_id, str(path), artifact_path=str(Path(SCORES_ARTIFACT).parent))
    client.set_tag(run_id, "metaopt.tested", "true")


def recorded_scores(client: MlflowClient, run_id: str) -> TaskScores | None:
    """The per-task test scores recorded with ``run_id``; None where there are none (a run of an older metaopt)."""
    listed = {a.path for a in client.list_artifacts(run_id, str(Path(SCORES_ARTIFACT).parent))}
    if SCORES_ARTIFACT not in listed:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(run_id, SCORES_ARTIFACT, tmp))
        try:
            return TaskScores.from_data(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):  # torn by a driver killed while copying it: scored again
            return None


def read_champion(client: MlflowClient, key: str) -> ChampionRecord | None:
    """The key's champion and its recorded scores; None only when the model or its alias does not exist.

    Any other failure (the server unreachable, a broken store) is a ``TrackingError``: it
    must never read as "no champion yet", which would move the alias.
    """
    name = registered_model_name(key)
    try:
        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == NOT_FOUND:
                return None
            raise
        version = model.aliases.get(CHAMPION_ALIAS)
        if version is None:
            return None
        run_id = client.get_model_version(name, version).run_id
        method = client.get_run(run_id).data.tags.get("metaopt.method", "?")
        return ChampionRecord(method, run_id, recorded_scores(client, run_id))
    except Exception as exc:  # noqa: BLE001 - every failure but "not found" is reported, none is "no champion"
        raise TrackingError(f"cannot read {name}@{CHAMPION_ALIAS}: {_first_line(exc)}") from exc


def register(client: MlflowClient, run_id: str, key: str, reason: str, *, metric: Metric,
             search_id: str | None = None) -> str:
    """Register the run's model under ``metaopt-<key>`` and point ``champion`` at the new version.

    The version gets the decision as its description and tags (method, key, test score ± CI,
    search); the registered model a description of what its versions are.
    """
    name = registered_model_name(key)
    run = client.get_run(run_id)
    tags, metrics = run.data.tags, run.data.metrics
    model_uri = tags.get("metaopt.model_uri", f"runs:/{run_id}/model")
    score = metric.show_ci(metrics.get(f"test_{metric.name}"), metrics.get(f"test_{metric.name}_ci95"))
    version_tags = {"metaopt.key": key, "metaopt.method": tags.get("metaopt.method", "?"),
                    f"metaopt.test_{metric.name}": score, "metaopt.search_id": search_id or tags.get("metaopt.search_id", ""),
                    "metaopt.run_id": run_id}
    mlflow.set_tracking_uri(client.tracking_uri)  # register_model resolves the model through the global store
    # A driver killed between registering and aliasing left this run's version of this search: it is the one.
    earlier = [v for v in _versions(client, name) if v.tags.get("metaopt.run_id") == run_id
               and v.tags.get("metaopt.search_id") == version_tags["metaopt.search_id"]]
    if earlier:
        version = earlier[0]
    else:
        from metaopt.environment import verbose

        # MLflow prints "Successfully registered model ..." to stderr itself; the search says it in its own line.
        with contextlib.nullcontext() if verbose() else contextlib.redirect_stderr(io.StringIO()):
            version = mlflow.register_model(model_uri, name, tags=version_tags)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
    client.update_model_version(name, version.version, description=(
        f"{tags.get('metaopt.method', '?')} from search {version_tags['metaopt.search_id']}, test {metric.label} "
        f"{score}. "
        f"Champion because: {reason}."))
    client.update_registered_model(name, description=(
        f"Champions of `{key}`: each version is a meta-learner that adapts to a new task of `{key}` from its "
        f"support set; `@champion` is the current best by test {metric.label} (paired 95% CI over the same held-out "
        f"tasks). Load it with `metaopt.load(\"models:/{name}@champion\")`."))
    for tag, value in {"metaopt.key": key, "metaopt.metric": metric.name}.items():
        client.set_registered_model_tag(name, tag, value)
    return str(version.version)


def _versions(client: MlflowClient, name: str) -> list:
    """The registered model's versions (none when it is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        return []


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


@dataclass
class Selection:
    """What ``select_champion`` found and did."""

    key: str
    metrics: tuple[Metric, ...]  # the key's, the primary one first
    decision: Decision
    candidates: list[Candidate]
    rescored: list[str] = field(default_factory=list)  # runs scored here (no recorded scores on enough tasks)
    version: str | None = None

    @property
    def test_tasks(self) -> int:
        """The paired test tasks of the decision."""
        return self.decision.tasks


def select_champion(
    name: str, *, tracking_uri: str | None = None, test_tasks: int | None = None, apply: bool = True,
    max_adapt_ms: float | None = None,
) -> Selection:
    """Each method's best trial of key ``name`` and its champion, on the same test tasks; maybe move the alias.

    Recorded per-task scores are used as they are; runs without them (or with fewer than
    ``test_tasks``) are scored once on the key's own test tasks, and the scores recorded.
    """
    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    boards = leaderboards(name, tracking_uri=uri)
    if len(boards) > 1:
        keys = ", ".join(b.key for b in boards if not b.legacy)
        raise LookupError(f"{name!r} has several keys ({keys}): name one")
    board = boards[0]
    if board.legacy:
        raise LookupError(f"{name!r} is a legacy experiment (one per family, settings mixed, written before keys): "
                          "it stays readable with `metaopt leaderboard`; a new search records a key to select on")
    run_ids = [row.run_id for row in board.rows if row.run_id and row.method != board.limit]  # a limit is no candidate
    if max_adapt_ms is not None:  # only what adapts within the budget (its recorded median); unmeasured runs are out
        run_ids = [r for r in run_ids if _adapt_ms(client, r) <= max_adapt_ms]
        if not run_ids:
            raise LookupError(f"no method of {board.key!r} adapts within {max_adapt_ms:g} ms (the recorded median "
                              f"`test_adapt_ms` of each method's best trial)")
    if not run_ids:
        raise LookupError(f"no finished trial of {board.key!r} to select from in {uri}")
    record = read_champion(client, board.key)
    if record is not None and max_adapt_ms is not None and _adapt_ms(client, record.run_id) > max_adapt_ms:
        record = None  # a champion over the budget is no champion here: the best within it takes the alias
    if record is not None and record.run_id not in run_ids:
        run_ids.append(record.run_id)
    recorded = {run_id: recorded_scores(client, run_id) for run_id in dict.fromkeys(run_ids)}
    needed = test_tasks or max((s.tasks for s in recorded.values() if s is not None), default=None)
    rescored: list[str] = []

    def score(run_id: str) -> TaskScores:
        """Scored once on the key's own test tasks, and recorded."""
        scores = _rescore(client, run_id, board.key, needed)
        record_scores(client, run_id, scores)
        rescored.append(run_id)
        return scores

    candidates: dict[str, Candidate] = {}
    for run_id, scores in recorded.items():
        if scores is None or scores.key != board.key or (needed and scores.tasks < needed):
            scores = score(run_id)
        method = client.get_run(run_id).data.tags.get("metaopt.method", "?")
        candidates[run_id] = Candidate(method, run_id, _first(scores, needed))
    champion = None if record is None else ChampionRecord(record.method, record.run_id,
                                                           candidates[record.run_id].scores)
    decision = decide_champion(board.key, list(candidates.values()), champion, board.metric, score)
    selection = Selection(board.key, board.metrics, decision, list(candidates.values()), rescored)
    if decision.moved and apply:
        selection.version = register(client, decision.best.run_id, board.key, decision.reason,
                                     metric=board.metric)
    if apply:
        from metaopt.tracking.board import write_board

        write_board(client, board.key)  # the landing page: scores rescored here, the champion first
    return selection


def _adapt_ms(client: MlflowClient, run_id: str) -> float:
    """The run's recorded median time to adapt to one task (infinite where it was never measured)."""
    return client.get_run(run_id).data.metrics.get("test_adapt_ms", float("inf"))


def _first(scores: TaskScores, n: int | None) -> TaskScores:
    """The scores of the first ``n`` tasks (all without ``n``)."""
    if n is None or scores.tasks <= n:
        return scores
    return TaskScores(scores.key, {k: v[:n] for k, v in scores.per_task.items()}, scores.split, scores.seed, scores.chunk)


def _rescore(client: MlflowClient, run_id: str, key: str, n_tasks: int | None) -> TaskScores:
    """Score a trial's model on the key's test tasks (the family rebuilt from the job its search recorded)."""
    job = job_of(client, run_id)
    if job.family.key != key:
        raise LookupError(f"run {run_id} is of key {job.family.key}, not {key}")
    learner = load_learner(run_id, tracking_uri=client.tracking_uri)
    return evaluate_test(learner, job.family.build(), key, n_tasks or job.budget.test_tasks)


def job_of(client: MlflowClient, trial_run_id: str) -> Job:
    """The job of the search a trial belongs to (its parent run keeps it as ``job/resolved_job.json``)."""
    parent = client.get_run(trial_run_id).data.tags.get("mlflow.parentRunId")
    if parent is None:
        raise LookupError(f"run {trial_run_id} is not a trial of a metaopt search")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(parent, "job/resolved_job.json", tmp))
        data: dict[str, Any] = json.loads(path.read_text())
    data.pop("space", None)
    return Job.model_validate(data)
