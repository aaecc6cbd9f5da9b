"""Few-shot image classification: every method on glyphs (or glyphs-crossfont, or a real Omniglot directory).

For each method and each setting (5-way 1-shot, 5-way 5-shot, 20-way 1-shot) a
Conv-4 learner is meta-trained on ``--train-episodes`` training episodes of that
setting (the Relation Network on Conv-4 with two pooling blocks, its paper's
embedding) with the trials' own training loop (``metaopt.search.fit.fit``) and scored
as a leaderboard scores it (``metaopt.search.evaluation.evaluate_test``: the key's 600
fixed test episodes, the learner's ``test_steps``): accuracy mean ± 95% CI, wall
time, and meta-training episodes/s. Cells run ``--workers`` at a time (one CPU
thread each); each finished cell is appended to ``<json>.cells.jsonl`` and a rerun
skips the cells already there with the same settings. Cells measured by the
script's first version (its own loop, 600 test episodes drawn in chunks of 50) are
reused and marked ``*``; ``--rerun-earlier`` measures them again.

    python benchmarks/fewshot_table.py [--family glyphs] [--root DIR] [--methods ...] [--train-episodes 3000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from _cells import load_cells, run_cells

SETTINGS = {"5w1s": (5, 1), "5w5s": (5, 5), "20w1s": (20, 1)}
QUERIES = 5
TEST_EPISODES = 600
# What each method trains with (Conv-4, Adam 0.001). MAML's 1 step at 0.4 in training and 3 at test (test_steps), as
# in Finn et al.'s 5-way setting. The methods whose inner loop is cheap (first-order MAML, ANIL's head-only loop,
# Reptile) take 5 steps at 0.1, Finn et al.'s 20-way setting, and test with their training steps: one step at 0.4
# trains them far slower (README).
METHODS: dict[str, dict] = {
    "protonet": {"meta_batch": 1},
    "matchingnet": {"meta_batch": 1},
    "relationnet": {"meta_batch": 1},
    "siamese": {"meta_batch": 1},
    "maml": {"inner_lr": 0.4, "inner_steps": 1, "test_steps": 3, "meta_batch": 4},
    "fomaml": {"inner_lr": 0.1, "inner_steps": 5, "meta_batch": 4},
    "anil": {"inner_lr": 0.1, "inner_steps": 5, "meta_batch": 4},
    "metasgd": {"inner_lr": 0.4, "inner_steps": 1, "test_steps": 3, "meta_batch": 4},
    "metacurvature": {"inner_lr": 0.4, "inner_steps": 1, "test_steps": 3, "meta_batch": 4},
    "mamlpp": {"inner_lr": 0.4, "inner_steps": 1, "test_steps": 3, "meta_batch": 4},
    "reptile": {"inner_lr": 0.1, "inner_steps": 5, "outer_lr": 1.0, "meta_batch": 4},
    # The model-based and in-context learners read each episode with the same Conv-4 embedding.
    "snail": {"meta_batch": 4, "max_shots": 20},
    "mann": {"meta_batch": 4},
    "metanet": {"meta_batch": 4},
    "cnp": {"meta_batch": 4},
    "anp": {"meta_batch": 4},
    "icl": {"meta_batch": 4},
}
EVALUATION = "evaluate_test"  # cells scored as the leaderboard scores (those without it: the first version's draw)
CONV4 = {"name": "conv4"}
# The Relation Network's embedding pools in its first two blocks only: 64x7x7 maps for its conv relation module.
BACKBONES = {"relationnet": {"name": "conv4", "pooled_blocks": 2}}
METRIC = {"protonet", "matchingnet", "relationnet", "siamese"}
NO_INNER_LOOP = METRIC | {"snail", "mann", "metanet", "cnp", "anp", "icl"}  # nothing adapted by gradient at test
PUBLISHED_OMNIGLOT = {  # ../shared/reference/published.md, accuracy %
    "matchingnet": {"5w1s": 98.1, "5w5s": 98.9, "20w1s": 93.8},
    "maml": {"5w1s": 98.7, "5w5s": 99.9, "20w1s": 95.8},
    "fomaml": {"5w1s": 98.3, "5w5s": 99.2, "20w1s": 89.4},
    "protonet": {"5w1s": 98.8, "5w5s": 99.7, "20w1s": 96.0},
    "metasgd": {"5w1s": 99.53, "5w5s": 99.93, "20w1s": 95.93},
    "relationnet": {"5w1s": 99.6, "5w5s": 99.8, "20w1s": 97.6},
    "reptile": {"5w1s": 97.68, "5w5s": 99.48, "20w1s": 89.43},
    "mamlpp": {"5w1s": 99.47, "5w5s": 99.93, "20w1s": 97.65},
    "snail": {"5w1s": 99.07, "5w5s": 99.78, "20w1s": 97.64},
    "metanet": {"5w1s": 98.95, "20w1s": 97.0},
    "cnp": {"5w1s": 95.3},
}


def given_hparams(method: str, overrides: dict | None = None) -> dict:
    """What ``method`` is given here: Adam at 0.001, its ``METHODS`` entry, then ``--set``'s overrides."""
    return {"outer_lr": 0.001, **METHODS[method], **(overrides or {})}


def hparams_of(method: str, overrides: dict | None = None) -> dict:
    """What ``method`` trains with here, as its learner resolves it (defaults filled in, ``test_steps`` included)."""
    from metaopt.learners import LEARNERS

    return LEARNERS[method].resolve_hparams(given_hparams(method, overrides))


def parse_overrides(pairs: list[str]) -> dict:
    """``--set KEY=VALUE`` pairs as hyperparameters (values read as YAML scalars: ``0.0005``, ``cosine``)."""
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set: expected KEY=VALUE, got {pair!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def steps_at_test(method: str, overrides: dict | None = None) -> int | None:
    """Inner steps a gradient method adapts with at test; None for a metric learner."""
    return hparams_of(method, overrides).get("test_steps")


def family_of(name: str, root: str | None, ways: int, shots: int):  # noqa: ANN201 - (TaskFamily, key)
    """The family of one setting, and its key: what a job with these options is scored on."""
    from metaopt.tasks import FAMILIES

    family_cls = FAMILIES[name]
    options = {"ways": ways, "shots": shots, "queries": QUERIES if name != "glyphs-crossfont" else 4 - shots}
    if root:
        options["root"] = root
    validated = family_cls.Options(**options)
    return family_cls.from_options(validated), family_cls.key(validated)


def score_accuracy(learner, family, key: str) -> tuple[float, float]:  # noqa: ANN001 - a MetaLearner, a TaskFamily
    """Accuracy % mean and 95% CI on the key's fixed test episodes, exactly as a search's leaderboard scores it."""
    from metaopt.search.evaluation import evaluate_test

    mean, ci = evaluate_test(learner, family, key, TEST_EPISODES).mean_ci("accuracy")
    return 100 * mean, 100 * ci


def cell(method: str, setting: str, family_name: str, root: str | None, episodes: int, seed: int,
         train_ways: int | None = None, overrides: dict | None = None, precision: str = "fp32") -> dict:
    """Train one method on one setting (metric learners: optionally on ``train_ways``-way episodes), test on 600."""
    torch.set_num_threads(1)
    from metaopt.learners import LEARNERS
    from metaopt.learners.checkpoint import build_learner
    from metaopt.search.fit import fit

    ways, shots = SETTINGS[setting]
    family, key = family_of(family_name, root, ways, shots)
    train_ways = train_ways if train_ways and not LEARNERS[method].uses_head else ways
    train_family = family if train_ways == ways else family_of(family_name, root, train_ways, shots)[0]
    hparams = given_hparams(method, overrides)
    iterations = max(1, episodes // hparams["meta_batch"])
    torch.manual_seed(seed)
    backbone = BACKBONES.get(method, CONV4)
    learner = build_learner(method, hparams, backbone=backbone, task_kind="classification",
                            input_shape=family.input_shape, output_size=ways, n_way=train_ways, max_iterations=iterations)
    trained = fit(learner, train_family, iterations=iterations, generator=torch.Generator().manual_seed(seed),
                  precision=precision)
    learner.n_way = ways  # a metric learner trained on more ways tests on the setting's ways
    mean, ci = score_accuracy(learner, family, key)
    episodes_done = iterations * hparams["meta_batch"]
    return {"method": method, "setting": setting, "family": family_name, "key": key, "backbone": backbone,
            "train_ways": train_ways, "episodes": episodes_done, "test_steps": steps_at_test(method, overrides),
            "hparams": hparams, "seed": seed, "accuracy": mean, "accuracy_ci95": ci, "train_s": trained.seconds,
            "episodes_per_s": episodes_done / trained.seconds, "evaluation": EVALUATION, "precision": precision}


def _row(cells: list[dict | None]) -> tuple[list[str], float, float]:
    """A method's accuracy texts per setting ("-" where not measured), its training seconds and episodes/s."""
    done = [c for c in cells if c]
    train_s = sum(c["train_s"] for c in done)
    rate = sum(c["episodes"] for c in done) / train_s if train_s else 0.0
    texts = [f"{c['accuracy']:.2f} ± {c['accuracy_ci95']:.2f}{'*' if earlier(c) else ''}" if c else "-"
             for c in cells]
    return texts, train_s, rate


def earlier(cell: dict) -> bool:
    """Whether the first version of this script measured the cell (its own loop, test episodes in chunks of 50)."""
    return cell.get("evaluation") != EVALUATION


def same_hparams(cell: dict, overrides: dict | None = None) -> bool:
    """Whether the cell trained and tested with today's settings of its method (older cells kept test_steps apart)."""
    from metaopt.learners import LEARNERS

    given = dict(cell["hparams"])
    if cell["method"] not in NO_INNER_LOOP:  # the first version tested with max(3, training steps), recorded or not
        given.setdefault("test_steps", cell.get("test_steps") or max(3, given.get("inner_steps", 1)))
    return LEARNERS[cell["method"]].resolve_hparams(given) == hparams_of(cell["method"], overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="glyphs", choices=["glyphs", "glyphs-crossfont", "omniglot"])
    parser.add_argument("--root", help="dataset directory (omniglot)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--train-episodes", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-ways", type=int, help="metric learners train on this many ways (Snell et al.)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="the meta-steps' arithmetic (bf16: autocast, as a job's `precision: bf16`)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="hyperparameters for every method of the run (e.g. outer_schedule=cosine)")
    parser.add_argument("--json", default=None, help="default: benchmarks/results/fewshot_<family>.json")
    parser.add_argument("--report-only", action="store_true", help="print the cells measured so far; run and write nothing")
    parser.add_argument("--rerun-earlier", action="store_true",
                        help="measure again the cells the script's first version measured (marked *)")
    args = parser.parse_args()
    overrides = parse_overrides(args.set)
    if args.family == "glyphs-crossfont":
        args.settings = [s for s in args.settings if SETTINGS[s][1] == 1]  # STIX has at most 4 renderings a class
    out = Path(args.json or Path(__file__).parent / "results" / f"fewshot_{args.family}.json")
    cells_file = out.with_suffix(".cells.jsonl")

    def same_settings(r: dict) -> bool:
        batch = given_hparams(r["method"], overrides)["meta_batch"]
        ways = SETTINGS[r["setting"]][0]
        wanted_ways = args.train_ways if args.train_ways and r["method"] in METRIC else ways
        return (r["family"] == args.family and r["seed"] == args.seed and r.get("train_ways", ways) == wanted_ways
                and r["episodes"] == max(1, args.train_episodes // batch) * batch
                and same_hparams(r, overrides) and r.get("backbone", CONV4) == BACKBONES.get(r["method"], CONV4)
                and r.get("precision", "fp32") == args.precision)

    def rerun(r: dict) -> bool:
        return args.rerun_earlier and earlier(r) and r["method"] in args.methods and r["setting"] in args.settings

    results = load_cells(cells_file, same_settings, lambda r: (r["method"], r["setting"]))
    results = {k: r for k, r in results.items() if not rerun(r)}
    jobs = {(m, s): (m, s, args.family, args.root, args.train_episodes, args.seed, args.train_ways, overrides,
                     args.precision)
            for m in args.methods for s in args.settings if (m, s) not in results}
    print(f"{len(jobs)} cells to run, {len(results)} reused from {cells_file}")
    if args.report_only:
        jobs = {}
    results.update(run_cells(cells_file, jobs, cell, workers=args.workers, describe=lambda r: (
        f"{r['method']:<14} {r['setting']:<6} {r['accuracy']:6.2f} ± {r['accuracy_ci95']:.2f}%  "
        f"{r['train_s']:.0f}s  {r['episodes_per_s']:.1f} episodes/s")))

    print(f"\n{args.family}: accuracy % (mean ± 95% CI over 600 test episodes), Conv-4, "
          f"{args.train_episodes} training episodes per cell"
          + "".join(f", {k}={v}" for k, v in overrides.items()))
    if any(earlier(c) for c in results.values()):
        print("* measured by the script's first version: its own training loop, and 600 test episodes drawn in "
              "chunks of 50 (now: fit() and the leaderboard's evaluate_test, chunks of 100)")
    print(f"{'method':<14}" + "".join(f"{s:>18}" for s in args.settings) + "   train s   episodes/s")
    rows = {method: _row([results.get((method, s)) for s in args.settings]) for method in args.methods}
    for method, (text, train_s, rate) in rows.items():
        print(f"{method:<14}" + "".join(f"{t:>18}" for t in text) + f"{train_s:>10.0f}{rate:>13.1f}")
        if args.family == "omniglot" and method in PUBLISHED_OMNIGLOT:
            published = [str(PUBLISHED_OMNIGLOT[method].get(s, "-")) for s in args.settings]
            print(f"{'  published':<14}" + "".join(f"{p:>18}" for p in published))
    print("\nmarkdown:\n| method | " + " | ".join(args.settings) + " | train s | episodes/s |")
    print("| --- |" + " --- |" * (len(args.settings) + 2))
    for method, (text, train_s, rate) in rows.items():
        if train_s:
            print(f"| {method} | " + " | ".join("–" if t == "-" else t for t in text)
                  + f" | {train_s:.0f} | {rate:.1f} |")
    if args.report_only:
        return
    out.write_text(json.dumps({"benchmark": "fewshot", "family": args.family, "train_episodes": args.train_episodes,
                               "cells": list(results.values()), "published_omniglot": PUBLISHED_OMNIGLOT}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
