"""One trial: meta-train a configuration, report as it goes, and say how it ended.

``train`` is the trial function ``(config, reporter) -> value``; it knows nothing
of Ray, Optuna or MLflow. ``execute_trial`` wraps it on the worker: it opens the
trial's record, connects the reporter to the Optuna study, and turns every way a
trial can end (finished, pruned, diverged, crashed) into a ``TrialResult``.
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

from metaopt.learners.base import MetaLearner
from metaopt.learners.checkpoint import build_learner, load_checkpoint, make_checkpoint
from metaopt.search.config import Job
from metaopt.search.evaluation import TEST_SEED, evaluate_tasks, mean_ci
from metaopt.search.reporting import Reporter, TrialTracker

TrialState = Literal["complete", "pruned", "failed"]
OBJECTIVE = "val_loss"


class Diverged(RuntimeError):
    """The meta-training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrialConfig:
    """Everything a worker needs to run one trial, as plain data."""

    search_id: str
    number: int
    method: str
    hparams: dict[str, Any]
    job: dict[str, Any]
    checkpoint_dir: str
    cpus: int = 1
    study_name: str | None = None
    storage: str | None = None  # the study's storage: a journal file path or a database URL
    trial_id: int | None = None
    run_id: str | None = None  # the trial's record, made by the driver: a retry or a resumed search reopens it

    @property
    def checkpoint_path(self) -> Path:
        """Where this trial's latest checkpoint is written."""
        return Path(self.checkpoint_dir) / f"trial-{self.number:05d}.pt"


@dataclass
class TrialResult:
    """How a trial ended."""

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


def _new_learner(job: Job, method: str, hparams: dict[str, Any], device: torch.device) -> MetaLearner:
    family = job.family.build()
    torch.manual_seed(job.seed)
    return build_learner(
        method,
        hparams,
        backbone=job.backbone_for(method),
        task_kind=family.kind,
        input_shape=family.input_shape,
        output_size=family.output_size,
        n_way=family.n_way,
        max_iterations=job.budget.meta_iterations,
        device=device,
    )


def train(config: TrialConfig, reporter: Reporter) -> float:
    """Meta-train ``config`` for the job's budget; report the validation loss every ``eval_interval``."""
    torch.set_num_threads(config.cpus)
    job = Job.model_validate(config.job)
    family = job.family.build()
    device = trial_device(job)
    learner = _new_learner(job, config.method, config.hparams, device)
    budget = job.budget
    deadline = time.monotonic() + budget.trial_timeout_s if budget.trial_timeout_s else math.inf
    val_tasks = family.fixed_tasks(budget.val_tasks, "val", seed=job.seed + 1)
    generator = torch.Generator().manual_seed(job.seed)
    meta_batch = learner.hparams["meta_batch"]

    def checkpoint() -> dict:
        ckpt = make_checkpoint(
            learner,
            backbone=job.backbone_for(config.method),
            input_shape=family.input_shape,
            output_size=family.output_size,
        )
        ckpt["resume"] = {"iteration": it, "generator": generator.get_state(), "value": value}
        return ckpt

    it, value = 0, math.nan
    resumed = _resume(config.checkpoint_path, learner, generator)
    if resumed is not None:
        it, value = resumed
        reporter.resumed(it, value)
    trajectory: list[tuple[int, dict[str, float]]] = []
    start, running, count = it, torch.zeros((), device=device), 0
    compiler = _CompileDecision(job.compile, learner, budget.meta_iterations - start)
    for it in range(start + 1, budget.meta_iterations + 1):
        compiler.before_step(it - start)
        running += learner.meta_step(family.sample(meta_batch, "train", generator).to(device))["loss"]
        compiler.after_step(it - start)
        count += 1
        if time.monotonic() > deadline:
            raise TrialTimeLimit(f"time limit of {budget.trial_timeout_s:g}s reached at iteration {it}")
        if it % budget.eval_interval and it != budget.meta_iterations:
            continue
        train_loss = (running / count).item()
        running.zero_()
        count = 0
        per_task = evaluate_tasks(learner, val_tasks)["loss"]
        value = per_task.mean().item()
        if not (math.isfinite(train_loss) and math.isfinite(value)):
            raise Diverged(f"non-finite loss at iteration {it} (train_loss={train_loss}, val_loss={value})")
        metrics = {"train_loss": train_loss, OBJECTIVE: value, **compiler.pop_metrics()}
        if hasattr(learner, "learned_hyperparameters"):  # the hypergradient learner's trajectories
            learned = learner.learned_hyperparameters()
            trajectory.append((it, learned))
            metrics.update({f"hyper/{k}": v for k, v in learned.items()})
        reporter.report(it, metrics, OBJECTIVE, checkpoint, instances=per_task.tolist())
    if trajectory:
        from metaopt.figures import plot_learned_hyperparameters

        figure = config.checkpoint_path.with_name(f"trial-{config.number:05d}-hyperparameters.png")
        reporter.attach(plot_learned_hyperparameters(trajectory, figure))
    return value


def _resume(path: Path, learner: MetaLearner, generator: torch.Generator) -> tuple[int, float] | None:
    """Restore a retried trial from its last checkpoint: ``(iteration, last validation loss)``, or None."""
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location=learner.device, weights_only=True)
    if "resume" not in ckpt:
        return None
    learner.load_state_dict(ckpt["state"])
    generator.set_state(ckpt["resume"]["generator"])
    return int(ckpt["resume"]["iteration"]), float(ckpt["resume"]["value"])


class _CompileDecision:
    """When to ``torch.compile`` a trial's meta-step: ``always``, ``never``, or ``auto``.

    ``auto`` times the first ``PROBE`` eager steps and compiles only if the rest of
    the trial would take longer than ``PAYBACK_S`` eagerly: a compile costs 5-25 s
    (less with a warm inductor cache) and speeds the step up 3-10x, so a short trial
    never spends more time compiling than training. The time of the first compiled
    step is reported as ``compile_seconds``.
    """

    PROBE = 20
    PAYBACK_S = 60.0

    def __init__(self, mode: str, learner: MetaLearner, iterations: int) -> None:
        self.mode, self.learner, self.iterations = mode, learner, iterations
        self.can_compile = hasattr(learner, "compile") and mode != "never"
        self.start = 0.0
        self.compiled_at: int | None = None
        self.metrics: dict[str, float] = {}

    def before_step(self, it: int) -> None:
        if not self.can_compile or self.compiled_at is not None:
            return
        if it == 1:
            self.start = time.perf_counter()
            if self.mode != "always":
                return
        elif it != self.PROBE + 1:
            return
        eager_rate = self.PROBE / (time.perf_counter() - self.start) if it > 1 else 0.0
        if self.mode == "auto" and (self.iterations - it + 1) / eager_rate <= self.PAYBACK_S:
            self.can_compile = False
            return
        torch._dynamo.reset()  # a fresh cache per trial: many trials share a worker process
        self.learner.compile()
        self.compiled_at = it
        self.start = time.perf_counter()

    def after_step(self, it: int) -> None:
        if it == self.compiled_at:
            self.metrics = {"compiled": 1.0, "compile_seconds": time.perf_counter() - self.start}

    def pop_metrics(self) -> dict[str, float]:
        metrics, self.metrics = self.metrics, {}
        return metrics


def trial_tags(search_id: str, job: dict[str, Any], method: str, number: int) -> dict[str, str]:
    """The tags of a trial's record."""
    return {
        "metaopt.role": "trial",
        "metaopt.search_id": search_id,
        "metaopt.family": job["family"]["name"],
        "metaopt.strategy": job.get("strategy", "tpe"),
        "metaopt.method": method,
        "metaopt.trial_number": str(number),
    }


def execute_trial(config: TrialConfig, tracker: TrialTracker) -> TrialResult:
    """Run ``train`` on this worker and record its outcome; never raises for a trial's own failure."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    start = time.monotonic()
    result = TrialResult(config.number, config.method, dict(config.hparams), state="failed")
    tags = trial_tags(config.search_id, config.job, config.method, config.number)
    with tracker.open_trial(tags, run_name=f"{config.method}-{config.number}", run_id=config.run_id) as log:
        result.run_id = log.run_id
        log.log_params({"method": config.method, **config.hparams})
        log.set_tags({"metaopt.node": _where(), "metaopt.pid": str(os.getpid())})
        pruner = config.job.get("pruner", {})
        reporter = Reporter(_optuna_trial(config), log, config.checkpoint_path,
                            per_instance=pruner.get("type") == "wilcoxon", warmup=pruner.get("n_warmup_steps", 0))
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
        if reporter.resumed_from is not None:
            result.extra["resumed_at"] = reporter.resumed_from
        result.iterations = reporter.last_step or 0
        if reporter.has_checkpoint and result.state != "failed":
            result.checkpoint = str(config.checkpoint_path)
            log.log_model(config.checkpoint_path, full=result.state == "complete")
        log.finish(result.state, result.reason)
    result.seconds = time.monotonic() - start
    return result


def evaluate_checkpoint(result: TrialResult, job: dict[str, Any], tracker: TrialTracker, cpus: int = 1) -> dict[str, float]:
    """Score a trial's checkpoint on the job's held-out test tasks: mean and 95% CI of each metric.

    The checkpoint is read where the trial wrote it, or fetched from the tracker when
    this worker is on another node.
    """
    torch.set_num_threads(cpus)
    spec = Job.model_validate(job)
    path = Path(result.checkpoint) if result.checkpoint else None
    if (path is None or not path.is_file()) and result.run_id:
        path = tracker.fetch_checkpoint(result.run_id)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"no checkpoint of trial {result.number} here or in the tracker")
    learner = load_checkpoint(path)
    tasks = spec.family.build().fixed_tasks(spec.budget.test_tasks, "test", seed=TEST_SEED)
    summary: dict[str, float] = {"test_tasks": float(spec.budget.test_tasks)}
    for name, values in evaluate_tasks(learner, tasks).items():
        summary[f"test_{name}"], summary[f"test_{name}_ci95"] = mean_ci(values)
    return summary


def _optuna_trial(config: TrialConfig) -> Any:
    if config.storage is None or config.trial_id is None:
        return None
    import optuna

    from metaopt.search.storage import open_storage
    from metaopt.search.strategies import make_pruner

    job = Job.model_validate(config.job)
    study = optuna.load_study(
        study_name=config.study_name,
        storage=open_storage(config.storage),
        pruner=make_pruner(job.pruner, job.budget),
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
