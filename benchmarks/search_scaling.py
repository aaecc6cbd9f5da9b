"""Search scaling: the same 8 equal trials in this process, then on Ray with 1 and 2 concurrent workers.

Each trial meta-trains the same MAML configuration on sine 10-shot (MLP 40-40) for
``--iterations`` meta-iterations with one CPU thread, through the full driver
(Optuna ask/tell, the trial wrapper, checkpoints at every evaluation; no MLflow, so
the tracker's cost is not counted). Timed: the trial phase, from the first ask to
the last tell (test scoring excluded); Ray is started (2 CPUs) before any timing,
and its start-up is reported on its own. Targets on this 2-core machine: 2 workers
take <= 0.55x the wall time of 1, and Ray adds <= 1 s per trial over in-process.

    python benchmarks/search_scaling.py [--iterations 2000] [--json benchmarks/results/search_scaling.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import yaml

from metaopt.search import load_job
from metaopt.search.executors import WORKER_ENV, Executor, InProcessExecutor, RayExecutor
from metaopt.search.runner import run_search

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"method": "maml", "inner_lr": 0.01, "outer_lr": 0.001, "inner_steps": 1, "meta_batch": 25}
TRIALS = 8


def write_job(directory: Path, iterations: int) -> Path:
    """A job of ``TRIALS`` copies of one configuration, so every trial does the same work."""
    job = {
        "name": "scaling",
        "family": {"name": "sine", "shots": 10, "queries": 10},
        "methods": ["maml"],
        "search_space": str(REPO / "search_spaces" / "sine.yaml"),
        "budget": {"trials": TRIALS, "meta_iterations": iterations, "eval_interval": iterations // 4,
                   "val_tasks": 100, "test_tasks": 100},
        "strategy": "random",
        "pruner": {"type": "none"},
        "compile": "never",
        "enqueue": [CONFIG] * TRIALS,
    }
    path = directory / "scaling.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def trial_phase(job_path: Path, executor: Executor, workdir: Path) -> dict:
    """Run the search; wall time from its start to its last finished trial, and the trials' own durations."""
    marks: dict[str, float] = {}

    def progress(event: str, info: dict) -> None:
        if event == "start":
            marks["start"] = time.perf_counter()
        elif event == "trial":
            marks["last"] = time.perf_counter()

    summary = run_search(load_job(job_path), executor=executor, workdir=workdir, progress=progress)
    assert [r.state for r in summary.results] == ["complete"] * TRIALS, [r.reason for r in summary.results]
    return {"wall_s": marks["last"] - marks["start"], "trial_s": [r.seconds for r in summary.results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2000, help="meta-iterations per trial")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "search_scaling.json"))
    args = parser.parse_args()
    import ray
    import torch

    torch.set_num_threads(1)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        job_path = write_job(Path(tmp), args.iterations)
        rows["in-process"] = trial_phase(job_path, InProcessExecutor(), Path(tmp) / "a")
        start = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV}, log_to_driver=False)
        ray_start_s = time.perf_counter() - start
        try:
            for workers in (1, 2):
                executor = RayExecutor(cpus_per_trial=1, max_concurrent=workers)
                rows[f"ray, {workers} worker{'s' * (workers > 1)}"] = trial_phase(job_path, executor, Path(tmp) / str(workers))
        finally:
            ray.shutdown()

    base, one, two = rows["in-process"], rows["ray, 1 worker"], rows["ray, 2 workers"]
    overhead = (one["wall_s"] - base["wall_s"]) / TRIALS
    ratio = two["wall_s"] / one["wall_s"]
    print(f"\n{TRIALS} equal trials (MAML, sine 10-shot, {args.iterations} meta-iterations each, 1 thread); "
          f"Ray start-up {ray_start_s:.1f} s, not counted")
    print(f"{'executor':<18}{'wall s':>10}{'mean trial s':>15}{'vs 1 worker':>14}")
    for name, row in rows.items():
        mean = sum(row["trial_s"]) / len(row["trial_s"])
        print(f"{name:<18}{row['wall_s']:>10.1f}{mean:>15.2f}{row['wall_s'] / one['wall_s']:>13.2f}x")
    print(f"\n2 workers / 1 worker: {ratio:.2f}x (target <= 0.55); "
          f"Ray's cost per trial over in-process: {overhead:+.2f} s (target <= 1 s)")
    report = {"benchmark": "search_scaling", "trials": TRIALS, "iterations": args.iterations, "rows": rows,
              "ray_start_s": ray_start_s, "two_over_one": ratio, "ray_overhead_per_trial_s": overhead,
              "machine": platform.processor() or platform.machine(), "python": sys.version.split()[0]}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
