"""Personalisation on MovieLens-100K beside MeLU's Table 2: MeLU-1 and MeLU-5 against the same network unadapted.

For each scenario (new users, new items; ``--scenarios`` takes all four), every method is
trained on the existing users' ratings of existing items through ``fit()`` and scored on the
scenario's test users (each user's 10 query ratings; MAE and nDCG@3, mean ± 95% CI over test
users): the global, item and user-support means; ``pretrain`` with no fine-tuning (MeLU's
network trained on the pooled ratings: the paper's Wide&Deep role, a global model); MeLU with
1 and 5 local steps; and the claim to check, the paired per-user difference in MAE of MeLU
against the unadapted network (negative: adaptation helps). ML-1M's absolute MAE is not the
target (ML-100K is smaller). Data: ``python benchmarks/data/movielens100k.py``. Cells are
resumable (``benchmarks/results/movielens_table.cells.jsonl``); writes ``movielens_table.json``.

    python benchmarks/movielens_table.py [--root DIR] [--scenarios new-users new-items] [--iterations 1000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _cells import load_cells, run_cells

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = RESULTS / "movielens_table.cells.jsonl"
BACKBONE = {"name": "melu"}  # 32-unit embeddings, decision layers 64-64 (the paper's)
# The local rates were chosen on the new-users validation users (MAE after 1,000 meta-steps): one step 0.05 0.866,
# 0.1 0.852, 0.2 0.882; five steps 0.005 0.839, 0.01 0.842 (0.02 diverged at test).
ROWS = {
    "global mean": ("global_mean", {}),
    "item mean": ("item_mean", {}),
    "user support mean": ("user_mean", {}),
    "no adaptation (pretrain, 0 steps)": ("pretrain", {"adapt_steps": 0, "meta_batch": 320, "outer_lr": 0.001}),
    "MeLU-1": ("melu", {"inner_steps": 1, "inner_lr": 0.1, "meta_batch": 32, "outer_lr": 0.001}),
    "MeLU-5": ("melu", {"inner_steps": 5, "inner_lr": 0.005, "meta_batch": 32, "outer_lr": 0.001}),
}
PUBLISHED = {  # MeLU Table 2 on MovieLens-1M: (Wide&Deep MAE, MeLU-1 MAE, MeLU-5 MAE, MeLU-5 nDCG@3)
    "existing": (0.9047, 0.7661, 0.7567, 0.8919), "new-users": (1.0694, 0.7884, 0.7854, 0.8812),
    "new-items": (1.2655, 0.9361, 0.9275, 0.8005), "new-both": (1.3114, 0.9299, 0.9235, 0.8008),
}
UNADAPTED = "no adaptation (pretrain, 0 steps)"


def cell(row: str, scenario: str, root: str, iterations: int) -> dict:
    """Train one row on one scenario; its per-user test scores and their means."""
    import torch

    from metaopt.learners.checkpoint import build_learner
    from metaopt.search.evaluation import mean_ci, score_tasks
    from metaopt.search.fit import fit
    from metaopt.tasks import FAMILIES

    torch.set_num_threads(1)
    family = FAMILIES["movielens"](root=root, scenario=scenario)
    users = len(family.tables["test"].count)
    test = family.fixed_tasks(users, "test", seed=20190804, chunk=users)  # every test user once
    method, hparams = ROWS[row]
    torch.manual_seed(0)
    learner = build_learner(method, hparams, backbone=BACKBONE, task_kind="rating", input_shape=family.input_shape,
                            output_size=1)
    trained = fit(learner, family, iterations=iterations, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    scores = score_tasks(learner, family, test)
    out = {"row": row, "scenario": scenario, "iterations": iterations, "hparams": hparams, "test_users": users,
           "train_s": trained.seconds, "test_s": time.perf_counter() - start,
           "per_user": {k: v.tolist() for k, v in scores.items()}}
    for name, values in scores.items():
        out[name], out[f"{name}_ci"] = mean_ci(values)
    return out


def main() -> None:
    """Run the missing cells, print the table, write JSON."""
    import torch

    from metaopt.search.evaluation import mean_ci
    from metaopt.tasks.cache import default_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(default_cache_dir() / "ml-100k"))
    parser.add_argument("--scenarios", nargs="+", default=["new-users", "new-items"],
                        choices=["existing", "new-users", "new-items", "new-both"])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    wanted = {(r, s): (r, s, args.root, args.iterations) for s in args.scenarios for r in ROWS}
    key = lambda c: (c["row"], c["scenario"])  # noqa: E731
    done = load_cells(CELLS, lambda c: key(c) in wanted and c["iterations"] == args.iterations
                      and c["hparams"] == ROWS[c["row"]][1], key)
    jobs = {k: v for k, v in wanted.items() if k not in done}
    print(f"{len(done)} cells reused, {len(jobs)} to run")
    done.update(run_cells(CELLS, jobs, cell, workers=args.workers,
                          describe=lambda c: f"{c['row']} {c['scenario']}: MAE {c['mae']:.4f} nDCG@3 {c['ndcg3']:.4f}"))
    for s in args.scenarios:
        users = done[(next(iter(ROWS)), s)]["test_users"]
        published = PUBLISHED[s]
        print(f"\n{s} ({users} test users; ML-1M's Wide&Deep / MeLU-1 / MeLU-5 MAE: {published[0]} / {published[1]} / "
              f"{published[2]}, MeLU-5 nDCG@3 {published[3]})")
        print(f"{'':<36}{'MAE':>18}{'nDCG@3':>18}{'train s':>10}")
        for row in ROWS:
            c = done[(row, s)]
            print(f"{row:<36}{c['mae']:>11.4f} ± {c['mae_ci']:.3f}{c['ndcg3']:>11.4f} ± {c['ndcg3_ci']:.3f}"
                  f"{c['train_s']:>10.1f}")
        base = torch.tensor(done[(UNADAPTED, s)]["per_user"]["mae"])
        for row in ("MeLU-1", "MeLU-5"):
            mean, ci = mean_ci(torch.tensor(done[(row, s)]["per_user"]["mae"]) - base)
            print(f"  {row} minus the unadapted network, MAE per user: {mean:+.4f} ± {ci:.4f}")
    (RESULTS / "movielens_table.json").write_text(json.dumps({"cells": list(done.values())}, indent=2) + "\n")
    print(f"wrote {(RESULTS / 'movielens_table.json').relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
