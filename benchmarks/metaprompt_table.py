"""Which examples should a frozen in-context model see? ``metaprompt`` and the selection baselines — the learners a
job searches (``metaopt.incontext.selectors``), run here on the same held-out tasks.

Each test task offers a pool of ``--pool`` labelled examples; the frozen model sees ``--context`` of them for each
query. Rows: random (mean ± sd over 5 seeds), the nearest to the query (KATE), farthest-point (diversity),
``metaprompt`` meta-trained here with ``fit()`` against the frozen model, the best of 20 random contexts per task
chosen on a dev part of its pool (the upper reference), and the whole pool in context (the limit, where it fits). The
family's primary metric (MSE, or accuracy), mean and 95% CI over ``--tasks`` held-out test tasks; the share of the gap
between random and best-of-20 that a row closes; the selection time per query (choosing, not the frozen model's
reading).

The frozen model:

- sine and ``functions`` (linear, dim 5, noise 0.5): ``--model URI`` (``models:/metaopt-<key>@champion``, a run, a
  file), or an ``icl`` trained here through ``fit()`` on ``--context``-point tasks (``--iterations``);
- ``movie-genres`` (MovieLens titles to genres; ``python benchmarks/data/movielens100k.py`` first): a language model
  over HTTP, ``--url`` of an OpenAI-compatible server and ``--served-model``, or (default) SmolLM2-135M-Instruct served
  here on 127.0.0.1 (``metaopt.incontext.serve``).

    python benchmarks/metaprompt_table.py [--family sine|functions --pool 40 --context 5 --tasks 1000]
    python benchmarks/metaprompt_table.py --family movie-genres [--tasks 100 --selector-iterations 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

RESULTS = Path(__file__).resolve().parent / "results"

# Each family: its options with a pool of ``n`` and a context of ``k``; the frozen icl's settings (the jobs' first
# tries: jobs/sine-incontext.yaml, jobs/functions-linear.yaml); the metaprompt settings used here.
FAMILIES: dict[str, dict[str, Any]] = {
    "sine": {"options": lambda n, k: {"shots": n, "queries": 10, "context": k}, "pool": 40, "context": 5,
             "tasks": 1000, "icl": ({"outer_lr": 0.001, "width": 64, "depth": 3, "heads": 4, "meta_batch": 16},
                                    [40, 40]),
             "selector": {"outer_lr": 0.003, "meta_batch": 8}, "iterations": 3000},
    "functions": {"options": lambda n, k: {"function": "linear", "dim": 5, "points": n, "queries": 10, "noise": 0.5,
                                           "context": k}, "pool": 40, "context": 10, "tasks": 1000,
                  "icl": ({"outer_lr": 0.001, "width": 64, "depth": 4, "heads": 4, "meta_batch": 64}, [64]),
                  "selector": {"outer_lr": 0.003, "meta_batch": 8}, "iterations": 3000},
    "movie-genres": {"options": lambda n, k: {"pool": n, "context": k, "queries": 8}, "pool": 24, "context": 4,
                     "tasks": 100, "selector": {"outer_lr": 0.01, "meta_batch": 2, "samples": 4}, "iterations": 40},
}


def build_family(name: str, pool: int, context: int) -> Any:
    """The family with a pool of ``pool`` and a context of ``context``."""
    from metaopt.tasks import FAMILIES as REGISTERED

    family = REGISTERED[name]
    return family.from_options(family.Options(**FAMILIES[name]["options"](pool, context)))


def frozen_icl(name: str, context: int, iterations: int, seed: int) -> tuple[Any, float]:
    """An ``icl`` trained on ``context``-point tasks of the family with the trials' ``fit()``, frozen; its training
    time."""
    from metaopt.incontext.frozen import TrainedModel
    from metaopt.learners.checkpoint import build_learner
    from metaopt.search.fit import fit

    hparams, hidden = FAMILIES[name]["icl"]
    tasks = build_family(name, context, context)
    torch.manual_seed(seed)
    learner = build_learner("icl", hparams, backbone={"name": "mlp", "hidden": hidden}, task_kind="regression",
                            input_shape=tasks.input_shape, output_size=1, max_iterations=iterations)
    trained = fit(learner, tasks, iterations=iterations, compile="never", generator=torch.Generator().manual_seed(seed))
    return TrainedModel(learner), trained.seconds


def served_smollm2() -> str:
    """SmolLM2-135M-Instruct on 127.0.0.1 in this process; its base URL."""
    from metaopt.incontext.serve import CausalLM, make_server, smollm2_file

    server = make_server(CausalLM(smollm2_file(), threads=torch.get_num_threads()), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/v1"


def selector(method: str, family: Any, frozen: Any, max_iterations: int | None = None, **hparams: Any) -> Any:
    """The job's learner ``method`` for ``family``, choosing for ``frozen``."""
    from metaopt.learners.checkpoint import build_learner

    learner = build_learner(method, {"context": family.context, **hparams}, backbone={}, task_kind=family.kind,
                            input_shape=family.input_shape, output_size=family.output_size, n_way=family.n_way,
                            max_iterations=max_iterations)
    learner.frozen = frozen
    return learner


def scored(family: Any, learner: Any, tasks: list[Any]) -> tuple[Tensor, float]:
    """Per-task primary metric of ``learner`` on ``tasks``, and its selection time per query (ms)."""
    metric = family.metrics[0].name
    values, seconds, queries = [], 0.0, 0
    for batch in tasks:
        start = time.perf_counter()
        with torch.no_grad():
            indices = learner.select(batch)
        seconds += time.perf_counter() - start
        queries += batch.query_x.shape[0] * batch.query_x.shape[1]
        predictions = (learner.predict(batch) if learner.name == "whole_pool"
                       else learner.context_predictions(batch, indices))
        values.append(family.score(predictions, batch)[metric])
    return torch.cat(values), 1000 * seconds / queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=list(FAMILIES), default="sine")
    parser.add_argument("--pool", type=int)
    parser.add_argument("--context", type=int)
    parser.add_argument("--tasks", type=int, help="held-out test tasks (default: 1000; movie-genres 100)")
    parser.add_argument("--iterations", type=int, default=5000, help="the icl trained here (no --model)")
    parser.add_argument("--selector-iterations", type=int, help="metaprompt's meta-training (3000; movie-genres 40)")
    parser.add_argument("--model", help="a frozen model's URI (default: train an icl here)")
    parser.add_argument("--url", help="movie-genres: an OpenAI-compatible server (default: SmolLM2 served here)")
    parser.add_argument("--served-model", default="smollm2", help="the model name the server is asked for")
    parser.add_argument("--chunk", type=int, default=100, help="tasks scored at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="default: benchmarks/results/metaprompt_<family>.json")
    args = parser.parse_args()
    spec = FAMILIES[args.family]
    pool, k = args.pool or spec["pool"], args.context or spec["context"]
    n_tasks, iterations = args.tasks or spec["tasks"], args.selector_iterations or spec["iterations"]
    args.json = args.json or str(RESULTS / f"metaprompt_{args.family.replace('-', '_')}.json")
    torch.set_num_threads(2 if args.family == "movie-genres" else 1)

    from metaopt.incontext.frozen import TrainedModel
    from metaopt.search.evaluation import TEST_SEED, mean_ci
    from metaopt.search.fit import fit

    family = build_family(args.family, pool, k)
    if args.family == "movie-genres":
        from metaopt.incontext.frozen import server_model

        url = args.url or served_smollm2()
        frozen = server_model({"url": url, "model": args.served_model, "family": {"name": "movie-genres",
                                                                                   **spec["options"](pool, k)}})
        described, train_s = f"{args.served_model} at {'(served here)' if not args.url else url}", 0.0
    elif args.model:
        frozen, described, train_s = TrainedModel.load(args.model), f"icl from {args.model}", 0.0
    else:
        frozen, train_s = frozen_icl(args.family, k, args.iterations, args.seed)
        described = f"icl, {args.iterations} iterations, {train_s:.0f} s"
    tasks = family.fixed_tasks(n_tasks, "test", seed=TEST_SEED, chunk=min(args.chunk, n_tasks))
    metric = family.metrics[0]
    rows: dict[str, tuple[float, float, float, float | None]] = {}

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    randoms, ms = [], 0.0
    for seed in range(5):
        learner = selector("random_context", family, frozen)
        learner.seed = seed
        values, ms = scored(family, learner, tasks)
        randoms.append(values)
        say(f"random seed {seed}: {values.mean():.4f}")
    means = [r.mean().item() for r in randoms]
    rows["random (5 seeds)"] = (*mean_ci(torch.stack(randoms).mean(0)), ms, statistics.stdev(means))
    for name, method in (("nearest (KATE)", "nearest_context"), ("diverse (farthest-point)", "diverse_context")):
        values, ms = scored(family, selector(method, family, frozen), tasks)
        rows[name] = (*mean_ci(values), ms, None)
        say(f"{name}: {values.mean():.4f}")
    torch.manual_seed(args.seed)
    learner = selector("metaprompt", family, frozen, max_iterations=iterations, **spec["selector"])
    say(f"metaprompt: meta-training {iterations} iterations against the frozen model")
    selector_s = fit(learner, family, iterations=iterations, compile="never",
                     generator=torch.Generator().manual_seed(args.seed)).seconds
    values, ms = scored(family, learner, tasks)
    rows[f"metaprompt ({iterations} iterations, {selector_s:.0f} s)"] = (*mean_ci(values), ms, None)
    say(f"metaprompt: {values.mean():.4f}")
    best = selector("best_of_contexts", family, frozen, tries=20)
    values, ms = scored(family, best, tasks)
    rows["best of 20 on a dev split (reference)"] = (*mean_ci(values), ms, None)
    values, ms = scored(family, selector("whole_pool", family, frozen), tasks)
    rows[f"whole pool ({pool} in context, limit)"] = (*mean_ci(values), ms, None)

    random_mean, best_mean = rows["random (5 seeds)"][0], rows["best of 20 on a dev split (reference)"][0]
    print(f"\n{args.family}, pool {pool}, context {k}: {metric.label} on {family_queries(tasks)} queries of {n_tasks} "
          f"test tasks (mean ± 95% CI); frozen {described}")
    print(f"{'selection':<40}{metric.label:>24}{'gap closed':>12}{'ms/query':>10}")
    out = []
    for name, (mean, ci, ms, sd) in rows.items():
        closed = (mean - random_mean) / (best_mean - random_mean) + 0.0 if random_mean != best_mean else float("nan")
        text = f"{mean:.4f} ± {ci:.4f}" + (f" (sd {sd:.4f})" if sd is not None else "")
        print(f"{name:<40}{text:>24}{100 * closed:>11.0f}%{ms:>10.3f}")
        out.append({"selection": name, metric.name: mean, "ci95": ci, "seed_sd": sd, "ms_per_query": ms,
                    "gap_closed": closed})
    Path(args.json).write_text(json.dumps({
        "benchmark": "metaprompt_table", "family": args.family, "pool": pool, "context": k, "tasks": n_tasks,
        "metric": metric.name, "model": args.model or ("smollm2" if args.family == "movie-genres" else "icl"),
        "iterations": args.iterations, "selector_iterations": iterations, "selector": spec["selector"], "rows": out},
        indent=1))
    print(f"\nwrote {args.json}")


def family_queries(tasks: list[Any]) -> int:
    """Queries per task."""
    return int(tasks[0].query_x.shape[1])


if __name__ == "__main__":
    main()
