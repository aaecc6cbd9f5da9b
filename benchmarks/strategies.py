"""Hypergradient tuning against Optuna at an equal budget: sine 10-shot MAML, 5 inner steps, paired seeds.

Every arm gets the same number of meta-gradient evaluations, ``--budget``
meta-iterations of 25 tasks (MLP 1-40-40-1, second order, 5 inner steps), and is
scored on the same 1,000 held-out test tasks (MSE after 5 steps). Per seed (the
initialisation, the task stream and the validation tasks), the arms are:

- ``hypergrad``: one run of the hypergradient learner from MAML's defaults
  (inner lr 0.01, outer 0.001) for the whole budget;
- ``hypergrad, one shared lr``: the same with one learned inner rate for all layers and steps;
- ``tpe``: ``--trials`` Optuna TPE trials over the inner and the outer lr (log scales), the
  first at MAML's defaults, each ``budget / trials`` iterations; the best by validation is scored;
- ``random``: the same with random search;
- ``tpe, best retrained``: TPE's best configuration retrained on the full budget (this arm
  spends twice the budget in all: the search, then the retraining).

Reported: test MSE mean over seeds, the paired 95% CI (t, n - 1 degrees of freedom)
of each arm's difference to ``tpe`` and to ``tpe, best retrained``, on how many seeds
the arm is below ``tpe``, and wall time. Cells (arm, seed) are resumable.

    python benchmarks/strategies.py [--budget 10000] [--trials 8] [--seeds 5] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from _cells import load_cells, run_cells

REPO = Path(__file__).resolve().parents[1]
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
SPACE = {"inner_lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
         "outer_lr": {"type": "float", "low": 0.0001, "high": 0.01, "log": True},
         "inner_steps": 5, "meta_batch": 25}
DEFAULTS = {"inner_lr": 0.01, "outer_lr": 0.001, "inner_steps": 5, "meta_batch": 25}
ARMS = ("hypergrad", "hypergrad, one shared lr", "tpe", "random", "tpe, best retrained")


def _job(directory: Path, name: str, *, seed: int, trials: int, iterations: int, strategy: str,
         method: str = "maml", space: dict | None = None, enqueue: list | None = None) -> Path:
    job = {
        "name": name, "family": {"name": "sine", "shots": 10, "queries": 10}, "methods": [method],
        "space": {method: space or SPACE},
        "budget": {"trials": trials, "meta_iterations": iterations, "eval_interval": max(1, iterations // 5),
                   "val_tasks": 200, "test_tasks": 1000},
        "strategy": strategy, "pruner": {"type": "none"}, "seed": seed, "compile": "auto",
        "enqueue": enqueue or [],
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def cell(arm: str, seed: int, budget: int, trials: int) -> dict:
    """Run one arm for one seed; its test MSE, wall time and what it chose or learned."""
    import torch

    torch.set_num_threads(1)
    from metaopt.search import load_job
    from metaopt.search.executors import InProcessExecutor
    from metaopt.search.runner import run_search

    def search(path: Path, work: Path):  # noqa: ANN202
        return run_search(load_job(path), executor=InProcessExecutor(), workdir=work)

    start = time.perf_counter()
    extra: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if arm.startswith("hypergrad"):
            config = {"method": "hypergrad", "base": "maml", **DEFAULTS, "shared_lr": arm.endswith("shared lr"),
                      "min_inner_lr": 1e-4, "max_inner_lr": 1.0}
            space = {k: v for k, v in config.items() if k != "method"}
            summary = search(_job(tmp, "hg", seed=seed, trials=1, iterations=budget, strategy="random",
                                  method="hypergrad", space=space), tmp / "w")
        else:
            strategy = "random" if arm == "random" else "tpe"
            summary = search(_job(tmp, "s", seed=seed, trials=trials, iterations=budget // trials,
                                  strategy=strategy, enqueue=[{"method": "maml", **DEFAULTS}]), tmp / "w")
            if arm == "tpe, best retrained":
                best = summary.champion.hparams
                extra["search_s"] = time.perf_counter() - start
                summary = search(_job(tmp, "r", seed=seed, trials=1, iterations=budget, strategy="random",
                                      space={**SPACE, **{k: best[k] for k in ("inner_lr", "outer_lr")}}), tmp / "r")
        row = summary.champion
        if row is None:  # every trial diverged or failed: the arm failed on this seed, which counts
            reasons = "; ".join(sorted({r.reason or r.state for r in summary.results}))
            return {"arm": arm, "seed": seed, "budget": budget, "trials": trials, "test_mse": math.inf,
                    "test_mse_ci95": math.nan, "val_mse": math.nan, "wall_s": time.perf_counter() - start,
                    "failed": reasons, **extra}
        extra["hparams"] = row.hparams
    return {"arm": arm, "seed": seed, "budget": budget, "trials": trials, "test_mse": row.test_loss,
            "test_mse_ci95": row.test_loss_ci95, "val_mse": row.best_val, "wall_s": time.perf_counter() - start,
            **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=10000, help="meta-iterations per arm and seed")
    parser.add_argument("--trials", type=int, default=8, help="trials of the tpe and random arms")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "strategies.json"))
    args = parser.parse_args()
    out = Path(args.json)
    cells_file = out.with_suffix(".cells.jsonl")
    results = load_cells(cells_file, lambda r: r["budget"] == args.budget and r["trials"] == args.trials,
                         lambda r: (r["arm"], r["seed"]))
    jobs = {(a, s): (a, s, args.budget, args.trials) for a in args.arms for s in range(args.seeds)
            if (a, s) not in results}
    print(f"{len(jobs)} cells to run, {len(results)} reused from {cells_file}")
    results.update(run_cells(cells_file, jobs, cell, workers=args.workers, describe=lambda r: (
        f"{r['arm']:<26} seed {r['seed']}  test MSE {r['test_mse']:.4f}  {r['wall_s']:.0f}s")))

    seeds = range(args.seeds)
    baselines = {"tpe": [results.get(("tpe", s)) for s in seeds],
                 "retrained": [results.get(("tpe, best retrained", s)) for s in seeds]}
    print(f"\nsine 10-shot MAML (5 inner steps), {args.budget} meta-iterations per arm, {args.seeds} paired seeds, "
          f"tpe/random: {args.trials} trials x {args.budget // args.trials} iterations")
    print(f"{'arm':<26}{'test MSE':>10}  {'diff to tpe (paired 95% CI)':<36}  {'diff to tpe, best retrained':<36}"
          f"{'lower':>7}{'wall s':>8}")
    summary = {}
    for arm in args.arms:
        cells = [results.get((arm, s)) for s in seeds]
        if not all(cells):
            continue
        mse = [c["test_mse"] for c in cells]
        failed = [c["seed"] for c in cells if c.get("failed")]
        if failed:
            print(f"{arm:<26}  failed on seed(s) {failed}: {cells[failed[0]]['failed']}")
            summary[arm] = {"failed_seeds": failed}
            continue
        line = f"{arm:<26}{statistics.fmean(mse):>10.4f}"
        row = {"test_mse": statistics.fmean(mse), "wall_s": statistics.fmean(c["wall_s"] for c in cells)}
        for name, base in baselines.items():
            if all(base) and base[0]["arm"] != arm and len(mse) > 1 and not any(b.get("failed") for b in base):
                diffs = [c["test_mse"] - b["test_mse"] for c, b in zip(cells, base)]
                mean = statistics.fmean(diffs)
                half = T_975[len(diffs) - 1] * statistics.stdev(diffs) / math.sqrt(len(diffs))
                row[f"diff_to_{name}"], row[f"diff_to_{name}_ci95"] = mean, half
                row[f"seeds_lower_than_{name}"] = sum(d < 0 for d in diffs)
                verdict = "better" if mean + half < 0 else "worse" if mean - half > 0 else "no difference"
                line += f"  {f'{mean:+.4f} ± {half:.4f} ({verdict})':<36}"
            else:
                line += f"  {'-':<36}"
        lower = f"{row['seeds_lower_than_tpe']}/{len(mse)}" if "seeds_lower_than_tpe" in row else "-"
        print(line + f"{lower:>7}{row['wall_s']:>8.0f}")
        summary[arm] = row
    print("lower: seeds on which the arm's test MSE is below tpe's")
    out.write_text(json.dumps({"benchmark": "strategies", "budget": args.budget, "trials": args.trials,
                               "seeds": args.seeds, "arms": summary, "cells": list(results.values())}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
