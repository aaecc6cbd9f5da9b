"""Does meta-learning pay? The transfer baselines beside MAML and ProtoNet at an equal training budget.

Settings: sine 10-shot (MLP 1-40-40-1) and glyphs 5-way 1-shot and 20-way 1-shot (Conv-4).
Methods: ``scratch`` (the support set alone), ``pretrain`` as Chen et al.'s Baseline (a fresh
linear head on frozen features), as Baseline++ (a cosine head) and fine-tuning everything,
MAML, and on glyphs ProtoNet. The budget is the same number of training examples for every
method: ``--train-episodes`` episodes on glyphs (MAML: meta-batches of 4; ProtoNet: 1; pretrain:
as many pooled images in batches of 64), ``--sine-iterations`` meta-batches of 25 tasks on sine
(pretrain: as many pooled points). Trained with the trials' loop (``fit()``), scored as a
leaderboard scores (``evaluate_test``: the key's fixed test tasks; mean ± 95% CI). Each trained
cell also records its score against task-aware fine-tuning steps (``ft_steps`` in
``--ft-steps``, on the first ``--ft-tasks`` test tasks). Cells are resumable
(``benchmarks/results/transfer_table.cells.jsonl``); writes ``transfer_table.json``.

    python benchmarks/transfer_table.py [--settings sine10 glyphs5w1s glyphs20w1s] [--train-episodes 1000]
                                        [--sine-iterations 2000] [--ft-steps 0 1 5 10 50 200] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _cells import load_cells, run_cells

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = RESULTS / "transfer_table.cells.jsonl"
SETTINGS = {"sine10": ("sine", {"shots": 10, "queries": 10}), "glyphs5w1s": ("glyphs", {"ways": 5, "shots": 1}),
            "glyphs20w1s": ("glyphs", {"ways": 20, "shots": 1})}
TEST_TASKS = {"sine": 1000, "glyphs": 600}
POOLED_BATCH = {"sine": 500, "glyphs": 64}  # sine: as many points a step as MAML's 25 tasks of 10 + 10
ROWS = {  # row -> (method, hyperparameters); per family where they differ
    "scratch": ("scratch", {"sine": {"lr": 0.01, "steps": 100}, "glyphs": {"lr": 0.01, "steps": 100}}),
    "pretrain (Baseline)": ("pretrain", {"any": {"fine_tune": "head", "head": "linear", "adapt_lr": 0.01,
                                                  "adapt_steps": 100}}),
    "pretrain (Baseline++)": ("pretrain", {"any": {"fine_tune": "head", "head": "cosine", "adapt_lr": 0.1,
                                                    "adapt_steps": 100}}),
    "pretrain, fine-tune all": ("pretrain", {"any": {"fine_tune": "all", "head": "linear", "adapt_lr": 0.001,
                                                      "adapt_steps": 100}}),
    "maml": ("maml", {"sine": {"inner_lr": 0.01, "inner_steps": 1, "meta_batch": 25},
                      "glyphs": {"inner_lr": 0.4, "inner_steps": 1, "test_steps": 3, "meta_batch": 4}}),
    "protonet": ("protonet", {"glyphs": {"meta_batch": 1}}),
}
FT_ROWS = {"maml", "protonet", "pretrain (Baseline)"}  # rows whose score is also taken against ft_steps
FT_LR = {"maml": 0.001, "protonet": 0.001, "pretrain (Baseline)": 0.001}
BACKBONE = {"sine": {"name": "mlp", "hidden": [40, 40]}, "glyphs": {"name": "conv4"}}


def hparams_of(row: str, family: str) -> dict | None:
    """The row's hyperparameters on ``family`` (None: the row does not run there)."""
    method, by_family = ROWS[row]
    given = by_family.get(family, by_family.get("any"))
    if given is None:
        return None
    base = {"outer_lr": 0.001} if method != "scratch" else {}
    if method == "pretrain":
        base["meta_batch"] = POOLED_BATCH[family]
    return {**base, **given}


def cell(row: str, setting: str, budget: int, ft_steps: tuple[int, ...], ft_tasks: int) -> dict:
    """Train one row on one setting at the budget; score on the test tasks, and against task-aware fine-tuning."""
    import torch

    from metaopt.learners.checkpoint import build_learner
    from metaopt.search.evaluation import evaluate_test
    from metaopt.search.fit import fit
    from metaopt.tasks import FAMILIES

    torch.set_num_threads(1)
    name, options = SETTINGS[setting]
    family_cls = FAMILIES[name]
    validated = family_cls.Options(**options)
    family, key = family_cls.from_options(validated), family_cls.key(validated)
    method, hparams = ROWS[row][0], hparams_of(row, name)
    sample = family.sample(1, "train", torch.Generator().manual_seed(0))
    per_task = sample.support_x.shape[1] + sample.query_x.shape[1]
    if method == "pretrain":  # as many training examples as the meta-learners see
        seen = budget * (25 * per_task if name == "sine" else per_task)  # sine: 25-task meta-batches; glyphs: episodes
        iterations = max(1, seen // hparams["meta_batch"])
    elif method == "scratch":
        iterations = 1
    else:
        iterations = max(1, budget if name == "sine" else budget // hparams["meta_batch"])
    torch.manual_seed(0)
    learner = build_learner(method, hparams, backbone=BACKBONE[name], task_kind=family.kind,
                            input_shape=family.input_shape, output_size=family.output_size, n_way=family.n_way,
                            max_iterations=iterations)
    trained = fit(learner, family, iterations=iterations, generator=torch.Generator().manual_seed(0))
    metric = family.metrics[0].name
    start = time.perf_counter()
    mean, ci = evaluate_test(learner, family, key, TEST_TASKS[name]).mean_ci(metric)
    out = {"row": row, "setting": setting, "budget": budget, "hparams": hparams, "metric": metric, "mean": mean,
           "ci": ci, "iterations": iterations, "train_s": trained.seconds, "test_s": time.perf_counter() - start}
    if row in FT_ROWS:
        curve = {}
        for steps in ft_steps:
            if method == "pretrain":  # its own adaptation is fine-tuning: T_ft more of it
                learner.hparams["adapt_steps"] = hparams["adapt_steps"] + steps
            else:
                learner.hparams.update(ft_steps=steps, ft_lr=FT_LR[row])
            curve[str(steps)] = evaluate_test(learner, family, key, ft_tasks).mean_ci(metric)
        out["ft_curve"], out["ft_tasks"] = curve, ft_tasks
    return out


def main() -> None:
    """Run the missing cells, print the tables, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--train-episodes", type=int, default=1000, help="glyphs: training episodes per cell")
    parser.add_argument("--sine-iterations", type=int, default=2000)
    parser.add_argument("--ft-steps", nargs="+", type=int, default=[0, 1, 5, 10, 50, 200])
    parser.add_argument("--ft-tasks", type=int, default=200, help="test tasks of the fine-tuning curves")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--report-only", action="store_true", help="print and write the cells measured so far")
    args = parser.parse_args()
    budget = {s: args.sine_iterations if SETTINGS[s][0] == "sine" else args.train_episodes for s in args.settings}
    ft = tuple(args.ft_steps)
    wanted = {(r, s): (r, s, budget[s], ft, args.ft_tasks) for s in args.settings for r in args.rows
              if hparams_of(r, SETTINGS[s][0]) is not None}
    key = lambda c: (c["row"], c["setting"])  # noqa: E731
    # A cell's fine-tuning curve is extra: a cell is reused whatever steps its curve was taken at.
    done = load_cells(CELLS, lambda c: key(c) in wanted and c["budget"] == budget[c["setting"]]
                      and c["hparams"] == hparams_of(c["row"], SETTINGS[c["setting"]][0]), key)
    jobs = {} if args.report_only else {k: v for k, v in wanted.items() if k not in done}
    print(f"{len(done)} cells reused, {len(jobs)} to run")
    done.update(run_cells(CELLS, jobs, cell, workers=args.workers,
                          describe=lambda c: f"{c['row']} {c['setting']}: {c['mean']:.4f} ± {c['ci']:.4f}"))
    print(f"\n{'':<26}" + "".join(f"{s:>22}" for s in args.settings))
    for row in args.rows:
        line = f"{row:<26}"
        for s in args.settings:
            c = done.get((row, s))
            scale = 100 if c and c["metric"] == "accuracy" else 1
            text = f"{scale * c['mean']:.3f} ± {scale * c['ci']:.3f}" if c else "-"
            line += f"{text:>22}"
        print(line)
    print("(sine: test MSE, lower is better; glyphs: test accuracy %; budget: "
          + ", ".join(f"{s} {budget[s]} {'meta-batches' if SETTINGS[s][0] == 'sine' else 'episodes'}"
                      for s in args.settings) + ")")
    print("\ntask-aware fine-tuning (ft_steps: score on the cell's first test tasks):")
    for (row, s), c in sorted(done.items()):
        if "ft_curve" in c:
            scale = 100 if c["metric"] == "accuracy" else 1
            print(f"  {row:<22} {s:<12} ({c['ft_tasks']} tasks) "
                  + "  ".join(f"{k}: {scale * v[0]:.3f}" for k, v in c["ft_curve"].items()))
    (RESULTS / "transfer_table.json").write_text(json.dumps({"cells": list(done.values())}, indent=2) + "\n")
    print(f"wrote {(RESULTS / 'transfer_table.json').relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
