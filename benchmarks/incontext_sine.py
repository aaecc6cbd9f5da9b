"""Sine 10-shot without a gradient step at test: ``icl``, ``cnp``, ``anp`` (and any learner) beside the sine table's MAML.

Each learner is meta-trained through ``fit()`` (the trials' loop) on sine tasks of 10
support and 10 query points, then scored as the sine table scores MAML (Finn et al.'s
setup): MSE on 100 query points of each of 1,000 fixed held-out tasks
(``sine-10shot-q100``), mean and 95% CI, the task read in one forward pass. The neural
processes also give their predictive log-likelihood per query (Gaussian; higher is better).
The reference row is metaopt's own MAML on the same key from ``benchmarks/sine_table.py``
(70,000 meta-iterations, one inner step, as the paper).

    python benchmarks/incontext_sine.py [--methods icl cnp anp] [--iterations 5000] [--workers 2]

Cells are appended to ``benchmarks/results/incontext_sine.cells.jsonl`` (a rerun with the
same settings reuses them); the table is written to ``incontext_sine.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _cells import load_cells, run_cells

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = RESULTS / "incontext_sine.cells.jsonl"
SETTINGS: dict[str, dict] = {  # the jobs' enqueued first tries (jobs/sine-incontext.yaml)
    "icl": {"outer_lr": 0.001, "width": 64, "depth": 3, "heads": 4, "meta_batch": 16},
    "cnp": {"outer_lr": 0.001, "width": 128, "layers": 3, "meta_batch": 16},
    "anp": {"outer_lr": 0.001, "width": 128, "layers": 2, "heads": 4, "meta_batch": 16},
    "snail": {"outer_lr": 0.001, "filters": 32, "key_size": 16, "value_size": 32, "max_shots": 10, "meta_batch": 16},
    "metanet": {"outer_lr": 0.001, "hidden": 64, "key_size": 32, "meta_batch": 16},
    "mann": {"outer_lr": 0.001, "hidden": 128, "slots": 32, "slot_size": 20, "reads": 1, "meta_batch": 16},
}
MLP = {"name": "mlp", "hidden": [40, 40]}
MAML_REFERENCE = (0.365, 0.026)  # benchmarks/sine_table.py, MAML 10-shot, 70,000 meta-iterations, this machine


def cell(method: str, iterations: int, seed: int) -> dict:
    """Train ``method`` on sine 10-shot and score it on the 1,000 test tasks of ``sine-10shot-q100``."""
    torch.set_num_threads(1)
    from metaopt.learners.checkpoint import build_learner
    from metaopt.search.evaluation import evaluate_test
    from metaopt.search.fit import fit
    from metaopt.tasks import Sine

    torch.manual_seed(seed)
    learner = build_learner(method, SETTINGS[method], backbone=MLP, task_kind="regression", input_shape=(1,),
                            output_size=1, max_iterations=iterations)
    start = time.perf_counter()
    fit(learner, Sine(shots=10, queries=10), iterations=iterations, generator=torch.Generator().manual_seed(seed))
    train_s = time.perf_counter() - start
    test = Sine.Options(shots=10, queries=100)
    family = Sine.from_options(test)
    mse, ci = evaluate_test(learner, family, Sine.key(test), 1000).mean_ci("loss")
    out = {"method": method, "settings": SETTINGS[method], "iterations": iterations, "seed": seed, "mse": mse,
           "mse_ci": ci, "train_s": round(train_s, 1)}
    if hasattr(learner, "log_likelihood"):
        ll = torch.cat([learner.log_likelihood(b) for b in family.fixed_tasks(1000, "test", seed=0)])
        out.update(log_likelihood=float(ll.mean()), log_likelihood_ci=float(1.96 * ll.std() / len(ll) ** 0.5))
    return out


def main() -> None:
    """Run the missing cells, print the table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["icl", "cnp", "anp"], choices=list(SETTINGS))
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    done = load_cells(CELLS, lambda c: c["iterations"] == args.iterations and c["seed"] == args.seed
                      and c["settings"] == SETTINGS.get(c["method"]), lambda c: c["method"])
    todo = {m: (m, args.iterations, args.seed) for m in args.methods if m not in done}
    done.update(run_cells(CELLS, todo, cell, workers=args.workers,
                          describe=lambda c: f"{c['method']}: MSE {c['mse']:.4f} ({c['train_s']:.0f} s)"))
    lines = [f"sine 10-shot, MSE on 100 query points of 1,000 test tasks (mean ± 95% CI), no gradient step at test; "
             f"{args.iterations} meta-iterations, one thread",
             "| method | test MSE | log-likelihood per query | training |", "|---|---|---|---|"]
    for method in args.methods:
        c = done[method]
        ll = f"{c['log_likelihood']:.3f} ± {c['log_likelihood_ci']:.3f}" if "log_likelihood" in c else "-"
        lines.append(f"| `{method}` | {c['mse']:.4f} ± {c['mse_ci']:.4f} | {ll} | {c['train_s']:.0f} s |")
    lines.append(f"| `maml` (sine table: one inner step, 70,000 meta-iterations) | {MAML_REFERENCE[0]} ± "
                 f"{MAML_REFERENCE[1]} | - | - |")
    print("\n".join(lines))
    (RESULTS / "incontext_sine.json").write_text(json.dumps({"cells": [done[m] for m in args.methods],
                                                             "table": lines}, indent=1))


if __name__ == "__main__":
    main()
