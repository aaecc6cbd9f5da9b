"""``fit()``: the one training loop, used by every trial and every benchmark script.

Meta-steps on training batches of the family, an evaluation of every family metric
on fixed validation tasks each ``eval_interval`` (and at the end), the compile
decision, a wall-clock deadline, and a callback that reports each evaluation
(a trial logs it, checkpoints and asks the pruner; a benchmark may pass none).
Knows nothing of Optuna, Ray or MLflow.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from metaopt.allocator import long_lived_frozen
from metaopt.learners.base import MetaLearner
from metaopt.search.evaluation import score_tasks
from metaopt.tasks.base import TaskBatch, TaskFamily

CompileMode = Literal["auto", "always", "never"]
Precision = Literal["fp32", "bf16"]


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that says so, a CPU with AVX-512 BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def precision_context(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """Where meta-steps run: as they are (``fp32``), or under bfloat16 autocast (``bf16``: matrix products and
    convolutions in bf16, reductions and the parameters in fp32); ``ValueError`` where ``device`` has no native bf16
    (emulated, it would only be slower)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if not bf16_supported(device):
        raise ValueError(f"precision: bf16 needs a CPU with AVX-512 BF16 or AMX, or a GPU with bf16; {device} has "
                         "neither (allowed: fp32, bf16)")
    return torch.autocast(device.type, dtype=torch.bfloat16)


class Diverged(RuntimeError):
    """The meta-training loss or a validation score became NaN or infinite."""


class TimeLimit(RuntimeError):
    """Training ran past its deadline, at meta-iteration ``iteration``."""

    def __init__(self, iteration: int) -> None:
        super().__init__(f"time limit reached at iteration {iteration}")
        self.iteration = iteration


@dataclass
class Evaluation:
    """One evaluation during training: the scores on the validation tasks at ``iteration``."""

    iteration: int
    train_loss: float  # mean meta-training loss since the previous evaluation
    val: dict[str, float]  # mean of each family metric on the validation tasks
    per_task: list[float]  # the primary metric on each validation task (paired pruners)
    learned: dict[str, float] = field(default_factory=dict)  # hyperparameters the learner tunes itself
    extra: dict[str, float] = field(default_factory=dict)  # compile_seconds, ...: one-off facts, not curves

    def metrics(self) -> dict[str, float]:
        """What a trial charts: ``train_loss``, ``val_<metric>``, ``hyper/<name>`` (its curves, nothing else: a trial's
        page opens on them)."""
        return {"train_loss": self.train_loss, **{f"val_{k}": v for k, v in self.val.items()},
                **{f"hyper/{k}": v for k, v in self.learned.items()}}

    def facts(self) -> dict[str, str]:
        """One-off facts of this evaluation (``metaopt.compile_seconds``): tags, not single-point charts."""
        return {f"metaopt.{k}": f"{v:.4g}" for k, v in self.extra.items()}


@dataclass
class FitResult:
    """How training ended."""

    iterations: int  # the last meta-iteration done
    seconds: float
    train_loss: float  # mean meta-training loss over the last evaluation window
    last: Evaluation | None = None


def fit(
    learner: MetaLearner,
    family: TaskFamily,
    *,
    iterations: int,
    generator: torch.Generator,
    start: int = 0,
    eval_interval: int | None = None,
    val_tasks: list[TaskBatch] | None = None,
    compile: CompileMode = "never",
    precision: Precision = "fp32",
    deadline: float = math.inf,
    on_eval: Callable[[Evaluation], None] | None = None,
    device: torch.device | str | None = None,
) -> FitResult:
    """Meta-train ``learner`` on ``family``'s training tasks from iteration ``start`` to ``iterations``.

    Batches of ``learner.meta_batch`` tasks come from ``generator`` (or as many examples pooled
    over the training tasks, for a learner that ``samples = "pooled"``). With
    ``val_tasks``, every metric of the family is scored on them each ``eval_interval``
    iterations and at the last one (only the last without an interval), and
    ``on_eval`` gets the ``Evaluation``; a non-finite loss or score raises ``Diverged``.
    ``deadline`` is a ``time.monotonic()`` value: past it, ``TimeLimit``. ``precision: bf16`` runs
    the meta-steps under bfloat16 autocast (``precision_context``); evaluation stays fp32. After the first step,
    what the process holds is left out of Python's full collections until the loop ends (``long_lived_frozen``).

    Example:
        >>> result = fit(learner, Sine(), iterations=1000, generator=torch.Generator().manual_seed(0))
    """
    device = torch.device(device or learner.device)
    steps_in = precision_context(precision, device)
    meta_batch = learner.meta_batch
    if not learner.trains:  # nothing to learn: evaluated once, at the end (no flat curve for a pruner to compare)
        eval_interval, start = None, iterations - 1
    primary = family.metrics[0].name
    compiler = CompileDecision(compile, learner, iterations - start, deadline)
    running, count = torch.zeros((), device=device), 0
    train_loss, last = math.nan, None
    begin = time.perf_counter()
    it = start
    with contextlib.ExitStack() as frozen:
        for it in range(start + 1, iterations + 1):
            draw = family.pooled if learner.samples == "pooled" else family.sample
            batch = draw(meta_batch, "train", generator).to(device)
            compiler.before_step(it - start, batch)
            with steps_in:
                running += learner.meta_step(batch)["loss"].float()
            if it == start + 1:  # what the first step imported and built, every later one reuses
                frozen.enter_context(long_lived_frozen())
            compiler.after_step(it - start)
            count += 1
            if time.monotonic() > deadline:
                raise TimeLimit(it)
            due = it == iterations or (eval_interval is not None and it % eval_interval == 0)
            if not due or (val_tasks is None and it != iterations):
                continue
            train_loss = (running / count).item()
            running.zero_()
            count = 0
            if val_tasks is None:
                break
            scores = score_tasks(learner, family, val_tasks)
            val = {name: values.mean().item() for name, values in scores.items()}
            if not (math.isfinite(train_loss) and all(math.isfinite(v) for v in val.values())):
                shown = ", ".join(f"val_{k}={v}" for k, v in val.items())
                raise Diverged(f"non-finite loss at iteration {it} (train_loss={train_loss}, {shown})")
            last = Evaluation(it, train_loss, val, scores[primary].tolist(), learner.learned_hyperparameters(),
                              compiler.pop_metrics())
            if on_eval is not None:
                on_eval(last)
    return FitResult(it, time.perf_counter() - begin, train_loss, last)


def compile_marker(signature: str) -> Path:
    """Where a compiled meta-step of ``signature`` is marked, beside this machine's persistent inductor cache."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return Path(cache_dir()) / "metaopt-compiled" / f"{signature}.json"


class CompileDecision:
    """When to ``torch.compile`` a learner's meta-step: ``always``, ``never``, or ``auto``.

    ``auto`` times the first ``PROBE`` eager steps and compiles only if the rest of
    the run would take longer than the compile costs to repay, counting only the time left
    before the deadline (a run the deadline ends sooner never repays a compile): a
    cold compile costs 5-25 s on a small network and minutes on Conv-4 (``PAYBACK_S``), a warm one
    a few seconds (``WARM_PAYBACK_S``). Warm means this machine's persistent inductor cache
    already holds the same compiled meta-step (``learner.compile_signature``: its graph
    and shapes; trials that differ only in a traced hyperparameter share one), which a
    marker beside that cache records after each compile — so the first trial of a search
    compiles, and the others on the machine find it. The first compiled step's time is
    reported as ``compile_seconds``, and whether the cache was warm as ``compile_cache_warm``.

    ``auto`` then times ``PROBE`` compiled steps against the eager probe (its first step left out: it pays one-off
    costs, a fused kernel's build among them) and goes back to eager steps where compiled ones are slower — on the
    CPU, Conv-4's eager second-order step, with its fused block (``metaopt.models.fused``), outruns the compiled one,
    which cannot take that kernel in. The ratio is reported as ``compile_speedup`` and kept in the marker, so the
    machine's later trials of that graph do not compile it at all.
    """

    PROBE = 20
    PAYBACK_S = 60.0
    WARM_PAYBACK_S = 10.0
    STALE_S = 1800.0  # a claim on a compile older than this is a trial that died compiling

    def __init__(self, mode: str, learner: MetaLearner, iterations: int, deadline: float = math.inf) -> None:
        self.mode, self.learner, self.iterations, self.deadline = mode, learner, iterations, deadline
        self.can_compile = learner.compilable and mode != "never"
        self.start, self.eager_rate = 0.0, 0.0
        self.compiled_at: int | None = None
        self.compiled_clock = 0.0
        self.next_check: int | None = None
        self.marker: Path | None = None
        self.claimed = False
        self.metrics: dict[str, float] = {}

    def before_step(self, it: int, batch: object = None) -> None:
        """Start the probe's clock, or compile once the probe says it pays (``batch``: the step's, for its shapes).

        Where another trial on this machine is compiling the same graph, train on eagerly and look again every
        ``PROBE`` steps: its compile, once done, is this trial's warm one."""
        if not self.can_compile or self.compiled_at is not None:
            return
        if it == 1:
            self.start = time.perf_counter()  # restarted after this step: the probe leaves its one-off costs out
            if self.mode != "always":
                return
        elif it == self.PROBE + 1:
            self.eager_rate = (self.PROBE - 1) / (time.perf_counter() - self.start)
        elif it != self.next_check:
            return
        usable_s = min((self.iterations - it + 1) / self.eager_rate if self.eager_rate else 0.0,
                       self.deadline - time.monotonic())
        if self.marker is None and batch is not None:
            signature = self.learner.compile_signature(batch)
            self.marker = compile_marker(signature) if signature else None
        warm = self.marker is not None and self.marker.exists()
        if self.mode == "auto" and usable_s <= (self.WARM_PAYBACK_S if warm else self.PAYBACK_S):
            self.can_compile = False
            return
        speedup = self._marked().get("speedup") if warm else None
        if self.mode == "auto" and speedup is not None and speedup < 1.0:  # compiled before here, and slower
            self.can_compile = False
            self.metrics = {"compiled": 0.0, "compile_speedup": float(speedup)}
            return
        if not warm and self.marker is not None and not self._claim():
            self.next_check = it + self.PROBE  # another trial is compiling it: eager steps meanwhile
            return
        torch._dynamo.reset()  # a fresh cache per run: many trials share a worker process
        self.learner.compile()
        self.compiled_at = it
        self.metrics = {"compile_cache_warm": float(warm)}
        self.start = time.perf_counter()

    def _claim(self) -> bool:
        """Claim this graph's compile on this machine (False: another trial's fresh claim holds it)."""
        lock = self.marker.with_suffix(".compiling")
        with contextlib.suppress(OSError):
            if time.time() - lock.stat().st_mtime > self.STALE_S:
                lock.unlink()
        try:
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        except OSError:  # a read-only cache: compile without a claim
            return True
        self.claimed = True
        return True

    def after_step(self, it: int) -> None:
        """Restart the eager probe's clock after its first step; time the first compiled step and mark its graph
        compiled on this machine; under ``auto``, keep the compiled step only if the next ``PROBE`` are faster."""
        if it == 1 and self.compiled_at is None:
            self.start = time.perf_counter()
        if it == self.compiled_at:
            seconds = time.perf_counter() - self.start
            self.metrics = {"compiled": 1.0, "compile_seconds": seconds, **self.metrics}
            self._mark({"compile_seconds": seconds})
            if self.claimed:
                with contextlib.suppress(OSError):
                    self.marker.with_suffix(".compiling").unlink()
            self.compiled_clock = time.perf_counter()
        elif self.compiled_at is not None and it == self.compiled_at + self.PROBE and self.eager_rate:
            speedup = self.PROBE / (time.perf_counter() - self.compiled_clock) / self.eager_rate
            self.metrics = {**self.metrics, "compile_speedup": speedup}
            self._mark({**self._marked(), "speedup": speedup})
            if self.mode == "auto" and speedup < 1.0:
                self.learner.compiled = None  # back to the faster eager step
                self.metrics["compiled"] = 0.0

    def _marked(self) -> dict[str, float]:
        """What the marker of this graph says (empty where there is none or it cannot be read)."""
        try:
            return json.loads(self.marker.read_text()) if self.marker is not None else {}
        except (OSError, ValueError):
            return {}

    def _mark(self, facts: dict[str, float]) -> None:
        if self.marker is not None:
            with contextlib.suppress(OSError):  # a read-only cache only costs the next trial a cold guess
                self.marker.parent.mkdir(parents=True, exist_ok=True)
                self.marker.write_text(json.dumps(facts))

    def pop_metrics(self) -> dict[str, float]:
        """The compile metrics not yet reported."""
        metrics, self.metrics = self.metrics, {}
        return metrics
