"""In-context learning of linear functions (Garg et al. 2022, figure 2): error / dim against the context size k.

A transformer (``icl``) is meta-trained on the ``functions`` family's linear class
(``x ~ N(0, I_d)``, ``w ~ N(0, I_d)``, ``y = w . x + noise``) with a context of ``2 d``
examples and a curriculum over the context size; then every k from 1 to ``2 d`` is scored
on 1,000 fixed held-out tasks (the first k context examples of each), beside the classic
estimators fit to the same k examples (least squares, ridge, Lasso, 3-nearest neighbours,
averaging, a two-layer network trained on the context, gradient-boosted trees) and the
family's exact limit, the posterior mean (the Bayes-optimal predictor). Reported: squared
error / dim, mean and 95% CI over the test tasks.

    python benchmarks/functions_table.py [--dims 5 10] [--noise 0.5] [--iterations 10000] [--workers 2] [--fresh]

The default has noise (0.5): without it, least squares is exact from k = d on (its error
is 0, and "within 2x of least squares" would mean exactly 0). Each finished dimension is
a line of ``benchmarks/results/functions_table.cells.jsonl`` (a rerun with the same
settings reuses it); the table is written to ``functions_table.json`` and the curves to
``functions_linear.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _cells import load_cells, run_cells

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = RESULTS / "functions_table.cells.jsonl"
TEST_TASKS = 1000
QUERIES = 10
ICL = {"width": 64, "depth": 4, "heads": 4, "curriculum": 0.3, "min_context": 1, "meta_batch": 64,
       "outer_lr": 0.001, "outer_schedule": "cosine"}
ESTIMATORS = {  # the classic estimators' settings (posterior_mean: the family's own noise, added per cell)
    "least_squares": {}, "ridge": {"alpha": 0.1}, "lasso": {"alpha": 0.01}, "knn": {"neighbors": 3},
    "averaging": {}, "support_net": {"steps": 300}, "boosted_trees": {"trees": 50},
}


def _mean_ci(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(1.96 * values.std() / len(values) ** 0.5)


def cell(dim: int, noise: float, iterations: int, seed: int) -> dict:
    """Train ``icl`` on linear functions of ``dim`` and score it and every estimator at each context size."""
    torch.set_num_threads(1)
    from metaopt.learners.checkpoint import build_learner
    from metaopt.search.fit import fit
    from metaopt.tasks.base import TaskBatch
    from metaopt.tasks.functions import Functions

    family = Functions(dim=dim, points=2 * dim, queries=QUERIES, noise=noise)
    torch.manual_seed(seed)
    icl = build_learner("icl", ICL, backbone={"name": "mlp", "hidden": [ICL["width"]]}, task_kind="regression",
                        input_shape=(dim,), output_size=1, max_iterations=iterations)
    start = time.perf_counter()
    fit(icl, family, iterations=iterations, generator=torch.Generator().manual_seed(seed))
    train_s = time.perf_counter() - start
    methods = {"icl": icl, **{name: build_learner(name, hparams, backbone={"name": "mlp"}, task_kind="regression",
                                                  input_shape=(dim,), output_size=1)
                              for name, hparams in {**ESTIMATORS, "posterior_mean": {"noise": noise}}.items()}}
    test = family.fixed_tasks(TEST_TASKS, "test", seed=1)
    curves: dict[str, dict[int, tuple[float, float]]] = {name: {} for name in methods}
    for k in range(1, 2 * dim + 1):
        context = [TaskBatch(b.support_x[:, :k], b.support_y[:, :k], b.query_x, b.query_y) for b in test]
        for name, learner in methods.items():
            errors = torch.cat([family.score_learner(learner, batch)["loss"] for batch in context])
            curves[name][k] = _mean_ci(errors)
    return {"dim": dim, "noise": noise, "iterations": iterations, "seed": seed, "icl": ICL, "estimators": ESTIMATORS,
            "test_tasks": TEST_TASKS, "train_s": round(train_s, 1),
            "curves": {name: {str(k): list(v) for k, v in curve.items()} for name, curve in curves.items()}}


def _table(cells: list[dict]) -> list[str]:
    lines = []
    for c in sorted(cells, key=lambda c: c["dim"]):
        d = c["dim"]
        ks = sorted({1, max(1, d // 2), d, d + d // 2, 2 * d})
        lines.append(f"\nlinear, dim {d}, noise {c['noise']:g}: error / dim (mean ± 95% CI, {c['test_tasks']} test "
                     f"tasks); icl trained {c['iterations']} meta-steps ({c['train_s']:.0f} s, one thread)")
        lines.append("| method | " + " | ".join(f"k = {k}" for k in ks) + " |")
        lines.append("|---|" + "---|" * len(ks))
        order = ["posterior_mean", "icl", *ESTIMATORS]
        for name in order:
            label = "posterior mean (exact limit)" if name == "posterior_mean" else name
            cells_ = [c["curves"][name][str(k)] for k in ks]
            lines.append(f"| {label} | " + " | ".join(_cell(m, ci) for m, ci in cells_) + " |")
        for k in (d, 2 * d):
            icl, ls, limit = (c["curves"][n][str(k)][0] for n in ("icl", "least_squares", "posterior_mean"))
            lines.append(f"k = {k}: icl / least squares = {icl / ls:.3g}, icl / limit = {icl / limit:.3g}")
    return lines


def _cell(mean: float, ci: float) -> str:
    return f"{mean:.3g} ± {ci:.2g}" if mean < 1e3 else f"{mean:.3g}"


def _plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 4), squeeze=False)
    for ax, c in zip(axes[0], sorted(cells, key=lambda c: c["dim"])):
        for name in ["posterior_mean", "icl", *ESTIMATORS]:
            ks = sorted(int(k) for k in c["curves"][name])
            means = [c["curves"][name][str(k)][0] for k in ks]
            style = {"posterior_mean": dict(color="black", ls="--", lw=2), "icl": dict(color="tab:red", lw=2.5)}
            ax.plot(ks, means, label="posterior mean (limit)" if name == "posterior_mean" else name,
                    **style.get(name, dict(lw=1)))
        ax.set(title=f"linear functions, dim {c['dim']}, noise {c['noise']:g}", xlabel="context examples k",
               ylabel="squared error / dim", yscale="log", ylim=(max(1e-3, c["noise"] ** 2 / c["dim"] / 2), 3))
        ax.axvline(c["dim"], color="grey", lw=0.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    """Run the cells not yet measured, print the tables, write JSON and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", nargs="*", type=int, default=[5, 10])
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--iterations", type=int, default=10000, help="icl's meta-steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="measure again, ignoring earlier cells")
    args = parser.parse_args()
    if args.fresh and CELLS.exists():
        CELLS.unlink()
    done = load_cells(CELLS, lambda c: c["noise"] == args.noise and c["iterations"] == args.iterations
                      and c["seed"] == args.seed and c["icl"] == ICL, lambda c: c["dim"])
    todo = {d: (d, args.noise, args.iterations, args.seed) for d in args.dims if d not in done}
    done.update(run_cells(CELLS, todo, cell, workers=args.workers,
                          describe=lambda c: f"dim {c['dim']}: icl trained in {c['train_s']:.0f} s"))
    cells = [done[d] for d in args.dims]
    lines = _table(cells)
    print("\n".join(lines))
    suffix = "" if args.noise == 0.5 else f"_noise{args.noise:g}"
    (RESULTS / f"functions_table{suffix}.json").write_text(json.dumps({"cells": cells, "table": lines}, indent=1))
    _plot(cells, RESULTS / f"functions_linear{suffix}.png")
    print(f"wrote {RESULTS / f'functions_table{suffix}.json'} and {RESULTS / f'functions_linear{suffix}.png'}")


if __name__ == "__main__":
    main()
