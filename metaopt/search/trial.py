"""One trial: meta-train a configuration with ``fit()``, report as it goes, and say how it ended.

``train`` is the trial function ``(config, reporter) -> value``; it knows nothing
of Ray, Optuna or MLflow. ``execute_trial`` wraps it on the worker: it opens the
trial's record, connects the reporter to the Optuna study, and turns every way a
trial can end (finished, pruned, diverged, crashed) into a ``TrialResult``.
``score_trial`` scores a trained checkpoint on the test tasks of the job's key.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from metaopt.allocator import keep_freed_memory
from metaopt.environment import quiet_mlflow
from metaopt.learners.base import MetaLearner
from metaopt.learners.checkpoint import build_learner, load_checkpoint, make_checkpoint, read_checkpoint
from metaopt.search import evaluation
from metaopt.search.config import Job
from metaopt.search.evaluation import TaskScores
from metaopt.search.fit import Diverged, Evaluation, TimeLimit, fit
from metaopt.search.reporting import Reporter, TrialTracker
from metaopt.tasks.base import TaskFamily

TrialState = Literal["complete", "pruned", "failed"]
VAL_SEED_OFFSET = 1  # validation tasks are drawn with seed job.seed + 1
ADAPT_MS = "val_adapt_ms"  # a search of two objectives: the second, what adapting to a validation task costs


def objective_name(job: Job) -> str:
    """The metric Optuna optimises and the pruners compare: the family's primary metric on validation tasks."""
    return f"val_{job.family.primary_metric.name}"


@dataclass(frozen=True)
class TrialConfig:
    """Everything a worker needs to run one trial: the validated job travels as it is."""

    search_id: str
    number: int
    method: str
    hparams: dict[str, Any]
    job: Job
    checkpoint_dir: str
    cpus: int = 1
    study_name: str | None = None
    storage: str | None = None  # the study's storage: a journal file path or a database URL
    trial_id: int | None = None
    run_id: str | None = None  # the trial's record, made by the driver: a retry or a resumed search reopens it
    prunable: bool = True  # False for a method's first trials, until one of its trials has finished: each gets a score
    seed_offset: int = 0  # a retrain of a best configuration with another training seed (``budget.seeds``): 1, 2, ...

    @property
    def seed_suffix(self) -> str:
        """``-seed1`` for a retrain with another training seed, else nothing: in its run's and checkpoint's names."""
        return f"-seed{self.seed_offset}" if self.seed_offset else ""

    @property
    def checkpoint_path(self) -> Path:
        """Where this trial's latest checkpoint is written."""
        return Path(self.checkpoint_dir) / f"trial-{self.number:05d}{self.seed_suffix}.pt"


@dataclass
class TrialResult:
    """How a trial ended; ``value`` is the primary metric on the validation tasks."""

    number: int
    method: str
    hparams: dict[str, Any]
    state: TrialState
    value: float | None = None
    reason: str | None = None
    run_id: str | None = None
    checkpoint: str | None = None
    iterations: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class TrialTimeLimit(RuntimeError):
    """The trial ran out of its ``budget.trial_timeout_s``."""


def trial_device(job: Job) -> torch.device:
    """``cuda`` when the job gives trials GPUs (Ray then sets ``CUDA_VISIBLE_DEVICES``), else the CPU."""
    if job.resources.gpus_per_trial > 0:
        if not torch.cuda.is_available():
            raise RuntimeError("resources.gpus_per_trial > 0 but this worker sees no CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")


def build_family(job: Job) -> TaskFamily:
    """The job's task family, quietly: what its data leaves out the driver said once (``check_family``)."""
    import warnings

    from metaopt.tasks.base import DataWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        return job.family.build()


def new_learner(job: Job, family: TaskFamily, method: str, hparams: dict[str, Any], device: torch.device,
                seed_offset: int = 0) -> MetaLearner:
    """The learner a trial of ``method`` starts from: seeded by the job (and a retrain's ``seed_offset``), shaped by
    the family."""
    from metaopt.learners import LEARNERS

    torch.manual_seed(job.seed + seed_offset)
    cls = LEARNERS[method].for_task_kind(family.kind)
    shaped = {name: int(max(cls.hyperparameters[name].minimum or 1, int(getattr(family, attribute))))
              for name, attribute in cls.family_defaults.items() if getattr(family, attribute, None) is not None}
    if job.frozen is not None and "frozen" in cls.hyperparameters:  # a selector: the model whose context it chooses
        shaped["frozen"] = job.frozen.reference(job.family)
    learner = build_learner(
        method,
        {**shaped, **hparams},
        backbone=job.backbone_for(method),
        task_kind=family.kind,
        input_shape=family.input_shape,
        output_size=family.output_size,
        n_way=family.n_way,
        max_iterations=job.budget.meta_iterations,
        device=device,
    )
    if "frozen" in shaped:
        learner.frozen_checkpoint = job.frozen_checkpoint()  # a trained model's, kept in the learner's checkpoint
    return learner


def prepare_process(cpus: int) -> None:
    """A trial's process: ``cpus`` threads for torch (two trials on two cores must not fight), freed activation
    memory kept for the next step (``metaopt.allocator``)."""
    torch.set_num_threads(cpus)
    keep_freed_memory()


def train(config: TrialConfig, reporter: Reporter) -> float:
    """Meta-train ``config`` for the job's budget; report every validation score each ``eval_interval``."""
    prepare_process(config.cpus)
    job, budget = config.job, config.job.budget
    family = build_family(job)
    device = trial_device(job)
    learner = new_learner(job, family, config.method, config.hparams, device, config.seed_offset)
    reporter.record_params({k: v for k, v in learner.hparams.items() if k not in config.hparams})  # the defaults used
    deadline = time.monotonic() + budget.trial_timeout_s if budget.trial_timeout_s else math.inf
    val_tasks = family.fixed_tasks(budget.val_tasks, "val", seed=job.seed + VAL_SEED_OFFSET)
    reporter.example = family.model_example(val_tasks[0].slice(0, 1))  # the logged model's input example
    generator = torch.Generator().manual_seed(job.seed + config.seed_offset)
    objective = objective_name(job)
    start, value = 0, math.nan
    try:
        resumed = _resume(config.checkpoint_path, learner, generator)
    except ValueError as exc:  # set aside; the trial starts over from a fresh learner and task stream
        damaged = config.checkpoint_path.with_name(config.checkpoint_path.name + ".damaged")
        config.checkpoint_path.replace(damaged)
        reporter.warn(f"checkpoint could not be restored, the trial starts over (kept as {damaged.name}): {exc}")
        learner = new_learner(job, family, config.method, config.hparams, device, config.seed_offset)
        generator, resumed = torch.Generator().manual_seed(job.seed + config.seed_offset), None
    if resumed is not None:
        start, value = resumed
        reporter.resumed(start, value)
    trajectory: list[tuple[int, dict[str, float]]] = []

    def report(evaluation: Evaluation) -> None:
        nonlocal value
        value = evaluation.val[job.family.primary_metric.name]

        def checkpoint() -> dict:
            ckpt = make_checkpoint(learner, backbone=job.backbone_for(config.method), input_shape=family.input_shape,
                                   output_size=family.output_size)
            ckpt["resume"] = {"iteration": evaluation.iteration, "generator": generator.get_state(), "value": value}
            return ckpt

        if evaluation.learned:
            trajectory.append((evaluation.iteration, evaluation.learned))
        if evaluation.facts():
            reporter.tag(evaluation.facts())
        reporter.report(evaluation.iteration, evaluation.metrics(), objective, checkpoint, instances=evaluation.per_task)

    if job.precision != "fp32":
        reporter.tag({"metaopt.precision": job.precision})
    try:
        fit(learner, family, iterations=budget.meta_iterations, generator=generator, start=start,
            eval_interval=budget.eval_interval, val_tasks=val_tasks, compile=job.compile, precision=job.precision,
            deadline=deadline, on_eval=report, device=device)
    except TimeLimit as exc:
        raise TrialTimeLimit(f"time limit of {budget.trial_timeout_s:g}s reached at iteration {exc.iteration}") from None
    if job.multi_objective:
        cost = evaluation.adaptation_cost(learner, family, tasks=evaluation.timed(budget.val_tasks), split="val")
        reporter.measured(ADAPT_MS, cost["adapt_ms"])
    if trajectory:
        from metaopt.figures import plot_learned_values

        figure = config.checkpoint_path.with_name(f"trial-{config.number:05d}-hyperparameters.png")
        reporter.attach(plot_learned_values(trajectory, figure))
    return value


def _resume(path: Path, learner: MetaLearner, generator: torch.Generator) -> tuple[int, float] | None:
    """Restore a retried trial from its last checkpoint: ``(iteration, last validation score)``, or None.

    ``ValueError`` where the checkpoint cannot be read or restored (truncated, damaged, of another learner).
    """
    if not path.is_file():
        return None
    ckpt = read_checkpoint(path, learner.device)
    if "resume" not in ckpt:
        return None
    try:
        learner.load_state_dict(ckpt["state"])
        generator.set_state(ckpt["resume"]["generator"])
        return int(ckpt["resume"]["iteration"]), float(ckpt["resume"]["value"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{path}: {type(exc).__name__}: {exc}") from None


def trial_tags(search_id: str, job: Job, method: str, number: int) -> dict[str, str]:
    """The tags of a trial's record."""
    return {
        "metaopt.role": "trial",
        "metaopt.search_id": search_id,
        "metaopt.family": job.family.name,
        "metaopt.key": job.family.key,
        "metaopt.strategy": job.strategy,
        "metaopt.method": method,
        "metaopt.trial_number": str(number),
    }


def execute_trial(config: TrialConfig, tracker: TrialTracker) -> TrialResult:
    """Run ``train`` on this worker and record its outcome; never raises for a trial's own failure."""
    quiet_mlflow()
    start = time.monotonic()
    result = TrialResult(config.number, config.method, dict(config.hparams), state="failed")
    tags = trial_tags(config.search_id, config.job, config.method, config.number)
    with tracker.open_trial(tags, run_name=f"{config.method}-{config.number}{config.seed_suffix}",
                            run_id=config.run_id) as log:
        result.run_id = log.run_id
        log.log_params({"method": config.method, **config.hparams})
        log.set_tags({"metaopt.debug.node": _where(), "metaopt.debug.pid": str(os.getpid())})
        log.log_dataset(*family_dataset(config.job))
        pruner = config.job.pruner
        optuna_trial = None if config.job.multi_objective else _optuna_trial(config)  # Optuna prunes one objective
        reporter = Reporter(optuna_trial, log, config.checkpoint_path,
                            per_instance=pruner.type == "wilcoxon", warmup=pruner.n_warmup_steps,
                            final_step=config.job.budget.meta_iterations, prunable=config.prunable)
        try:
            result.value = train(config, reporter)
            result.state = "complete"
        except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded trial state
            import optuna

            stopped = isinstance(exc, optuna.TrialPruned) or (
                isinstance(exc, TrialTimeLimit) and reporter.last_value is not None
            )
            if stopped:
                result.state, result.value = "pruned", reporter.last_value
            own = (optuna.TrialPruned, Diverged, TrialTimeLimit)
            result.reason = str(exc) if isinstance(exc, own) else _describe(exc)
        reporter.flush()
        result.extra.update(reporter.extra)
        if reporter.resumed_from is not None:
            result.extra["resumed_at"] = reporter.resumed_from
        result.iterations = reporter.last_step or 0
        if reporter.has_checkpoint and result.state != "failed":
            result.checkpoint = str(config.checkpoint_path)
            log.log_model(config.checkpoint_path, full=result.state == "complete", example=reporter.example,
                          metrics=reporter.last_metrics)
        log.finish(result.state, result.reason)
    result.seconds = time.monotonic() - start
    return result


def family_dataset(job: Job) -> tuple[str, str, dict[str, str]]:
    """The task family as a dataset record: its key, a digest of its options, and the options as the source."""
    import hashlib
    import json

    options = json.dumps(job.family.options.model_dump(mode="json"), sort_keys=True)
    digest = hashlib.sha256(f"{job.family.name}:{options}".encode()).hexdigest()[:8]
    return job.family.key, digest, {"metaopt.family": job.family.name, "metaopt.options": options}


def score_trial(checkpoint: str | None, run_id: str | None, job: Job, tracker: TrialTracker, cpus: int = 1) -> TaskScores:
    """A trained checkpoint on the test tasks of the job's key: per-task scores of every metric of the family.

    The checkpoint is read where the trial wrote it, or fetched from the tracker when
    this worker is on another node.
    """
    prepare_process(cpus)
    path = Path(checkpoint) if checkpoint else None
    if (path is None or not path.is_file()) and run_id:
        path = tracker.fetch_checkpoint(run_id)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"no checkpoint of run {run_id} here or in the tracker")
    learner = load_checkpoint(path)
    return evaluation.evaluate_test(learner, build_family(job), job.family.key, job.budget.test_tasks)


def _optuna_trial(config: TrialConfig) -> Any:
    if config.storage is None or config.trial_id is None:
        return None
    import optuna

    from metaopt.search.pruners import make_pruner
    from metaopt.search.storage import open_storage

    study = optuna.load_study(
        study_name=config.study_name,
        storage=open_storage(config.storage),
        pruner=make_pruner(config.job.pruner, config.job.budget),
    )
    return optuna.Trial(study, config.trial_id)


def _where() -> str:
    """The Ray node this trial runs on (its id), or the host name outside Ray."""
    import socket
    import sys

    ray = sys.modules.get("ray")  # a Ray worker has imported it; never import it here
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()


def _describe(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(exc).__name__}: {exc}{where}"
