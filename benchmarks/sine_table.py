"""The sinusoid table of the literature (Finn et al. 2017; Li et al. 2017), for every metaopt method.

Setup (the MAML paper's): amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5]; MLP
1-40-40-1 ReLU; meta-batch 25; Adam 0.001; 70,000 meta-iterations; K support and
K query points per training task. Training is the trials' loop (``fit()``), scoring
the leaderboard's (``evaluate_test``). Reported: MSE on 100 query points after ONE
adaptation step from the meta-learned initialisation (and after ten), mean and 95%
confidence interval over 1,000 held-out test tasks (a fixed seed).

    python benchmarks/sine_table.py [--iterations 70000] [--shots 5 10 20] [--methods ...] [--workers 2] [--fresh]

Each finished cell is appended to ``benchmarks/results/sine_table.cells.jsonl``; a rerun
skips the cells already there with the same settings (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _cells import load_cells, run_cells

# What each method used: the paper's MAML setting (1 inner SGD step, lr 0.01) unless said.
SETTINGS: dict[str, dict] = {
    "maml": {"inner_lr": 0.01, "inner_steps": 1},
    "fomaml": {"inner_lr": 0.01, "inner_steps": 1},
    # LSLR starts at 0.01; first order for the first 30% (DA); cosine outer schedule; one step, so MSL is moot.
    "mamlpp": {"inner_lr": 0.01, "inner_steps": 1, "first_order_until": 0.3},
    # Reptile trains with 5 inner steps at lr 0.01 (0.02 diverged after ~5,000 iterations), meta step 0.1 annealed linearly to 0 (its paper); evaluated like the others.
    "reptile": {"inner_lr": 0.01, "inner_steps": 5, "outer_lr": 0.1, "anneal": True},
    # ANIL adapts the head only; a head-only step needs a larger rate.
    "anil": {"inner_lr": 0.1, "inner_steps": 1},
    # alpha starts at 0.01 everywhere.
    "metasgd": {"inner_lr": 0.01, "inner_steps": 1},
    "metacurvature": {"inner_lr": 0.01, "inner_steps": 1, "curvature": "kronecker"},
}
PUBLISHED = {  # Li et al. 2017, Table 1: MSE after one step, 95% CI
    ("maml", 5): (1.13, 0.18), ("maml", 10): (0.77, 0.11), ("maml", 20): (0.48, 0.08),
    ("metasgd", 5): (0.90, 0.16), ("metasgd", 10): (0.53, 0.09), ("metasgd", 20): (0.31, 0.05),
}
TEST_TASKS = 1000
MEASURED_HERE = {("maml", 10): (0.331, 0.022), ("maml", 5): (0.550, 0.038)}  # vmapped MAML, paper setup, this machine


def hparams_of(method: str) -> dict:
    """What ``method`` trains with here, as its learner resolves it (defaults filled in)."""
    from metaopt.learners import LEARNERS

    return LEARNERS[method].resolve_hparams({"outer_lr": 0.001, "meta_batch": 25, **SETTINGS[method]})


def score_mse(learner, shots: int, steps: int | None = None) -> tuple[float, float]:  # noqa: ANN001 - a MetaLearner
    """MSE mean and 95% CI on the 1,000 fixed test tasks of ``sine-<shots>shot-q100``, as a leaderboard scores them."""
    from metaopt.search.evaluation import evaluate_test
    from metaopt.tasks import Sine

    test = Sine.Options(shots=shots, queries=100)
    return evaluate_test(learner, Sine.from_options(test), Sine.key(test), TEST_TASKS, steps=steps).mean_ci("loss")


def cell(method: str, shots: int, iterations: int, compile_mode: str, seed: int) -> dict:
    """Meta-train one method at one shot count with the trials' ``fit()`` and score it as a leaderboard does.

    The test tasks are those of the key ``sine-<K>shot-q100`` (100 query points, the papers' protocol), scored by
    ``evaluate_test`` after 1 and after 10 inner steps.
    """
    torch.set_num_threads(1)
    from metaopt.learners import LEARNERS
    from metaopt.models import MLP
    from metaopt.search.fit import fit
    from metaopt.tasks import Sine

    torch._dynamo.reset()  # cells share worker processes; each compiles its own graphs
    torch.manual_seed(seed)
    hparams = {"outer_lr": 0.001, "meta_batch": 25, **SETTINGS[method]}
    learner = LEARNERS[method](MLP(in_features=1, out_features=1), hparams, task_kind="regression",
                               max_iterations=iterations)
    trained = fit(learner, Sine(shots=shots, queries=shots), iterations=iterations, compile=compile_mode,
                  generator=torch.Generator().manual_seed(seed))
    out = {"method": method, "shots": shots, "iterations": iterations, "hparams": hparams,
           "compiled": getattr(learner, "compiled", None) is not None, "train_s": trained.seconds, "seed": seed,
           "key": Sine.key(Sine.Options(shots=shots, queries=100)), "evaluation": "evaluate_test"}
    for steps in (1, 10):
        out[f"mse_{steps}"], out[f"mse_{steps}_ci95"] = score_mse(learner, shots, steps)
    return out


def main() -> None:

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=70_000)
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--methods", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--workers", type=int, default=2, help="cells run in parallel, one CPU thread each")
    parser.add_argument("--compile", choices=["auto", "always", "never"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="ignore cells recorded by an earlier run")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "sine_table.json"))
    args = parser.parse_args()

    cells_file = Path(args.json).with_suffix(".cells.jsonl")
    if args.fresh:
        cells_file.unlink(missing_ok=True)
    from metaopt.learners import LEARNERS

    def same_settings(r: dict) -> bool:
        resolved = LEARNERS[r["method"]].resolve_hparams(r["hparams"])
        return r["iterations"] == args.iterations and resolved == hparams_of(r["method"]) and r["seed"] == args.seed

    results = load_cells(cells_file, same_settings, lambda r: (r["method"], r["shots"]))
    jobs = {(m, k): (m, k, args.iterations, args.compile, args.seed)
            for m in args.methods for k in args.shots if (m, k) not in results}
    print(f"{len(jobs)} cells to run, {len(results)} reused from {cells_file}")
    results.update(run_cells(cells_file, jobs, cell, workers=args.workers, describe=lambda r: (
        f"{r['method']:<14} {r['shots']:>2}-shot  MSE@1 {r['mse_1']:.3f} ± {r['mse_1_ci95']:.3f}  "
        f"MSE@10 {r['mse_10']:.3f}  ({r['train_s']:.0f}s)")))

    print(f"\nsine regression, MSE after 1 step (after 10), mean ± 95% CI over 1000 test tasks x 100 points, "
          f"{args.iterations} meta-iterations, meta-batch 25")
    header = f"{'method':<16}" + "".join(f"{f'{k}-shot':>26}" for k in args.shots)
    print(header)
    for method in args.methods:
        line = f"{method:<16}"
        for k in args.shots:
            r = results[(method, k)]
            text = f"{r['mse_1']:.3f} ± {r['mse_1_ci95']:.3f} ({r['mse_10']:.3f})"
            line += f"{text:>26}"
        print(line)
    for label, table in (("published (Li et al. 2017)", PUBLISHED), ("measured here, vmapped MAML", MEASURED_HERE)):
        for method in ("maml", "metasgd"):
            cells = [table.get((method, k)) for k in args.shots]
            if any(cells):
                print(f"{method:<16}" + "".join(f"{(f'{c[0]:.2f} ± {c[1]:.2f}' if c else '-'):>26}" for c in cells)
                      + f"   <- {label}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "sine_table", "iterations": args.iterations, "seed": args.seed,
                               "cells": list(results.values()),
                               "published": {f"{m}/{k}": v for (m, k), v in PUBLISHED.items()},
                               "measured_here": {f"{m}/{k}": v for (m, k), v in MEASURED_HERE.items()}}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
