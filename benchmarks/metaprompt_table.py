"""Which examples should a frozen in-context model see? ``metaprompt`` and the selection baselines, sine and
``functions`` (linear, dim 5, noise 0.5), with a frozen ``icl``.

Each test task offers a pool of ``--pool`` labelled points; the frozen model sees ``--context`` of them for each
query. Rows: random (mean ± sd over 5 seeds), the nearest to the query (KATE), farthest-point (diversity), the best
of 20 random contexts per task chosen on a dev split of its pool (the upper reference: it looks at labels of the
task that a selector may not, so it is not a candidate), and the whole pool in context (the limit where it fits).
MSE on the queries, mean and 95% CI over ``--tasks`` held-out test tasks; the selection time per query.

The frozen model: ``--model URI`` (``models:/metaopt-<key>@champion``, a run, a file), or an ``icl`` trained here
through ``fit()`` on ``--context``-shot sine tasks (``--iterations``).

    python benchmarks/metaprompt_table.py [--family sine|functions --pool 40 --context 5 --tasks 1000 --iterations 5000]

``metaprompt`` (``metaopt.incontext.metaprompt``) is meta-trained here with ``fit()`` on training tasks of the same
pool family (``--selector-iterations``) and chooses greedily at test. Next (issue 27): the text family
(``movie-genres``) with a language model over HTTP (``metaopt.incontext.http_model``), ``metaprompt`` as a job's method.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

RESULTS = Path(__file__).resolve().parent / "results"
DEV = 10  # pool points a best-of-m context is judged on (never in its context)


# The families of the table: tasks with ``n`` labelled points, and the frozen icl's settings (the jobs' first tries:
# jobs/sine-incontext.yaml, jobs/functions-linear.yaml).
FAMILIES = {
    "sine": (lambda n: _family("Sine", shots=n, queries=10),
             {"outer_lr": 0.001, "width": 64, "depth": 3, "heads": 4, "meta_batch": 16}, [40, 40]),
    "functions": (lambda n: _family("Functions", function="linear", dim=5, points=n, queries=10, noise=0.5),
                  {"outer_lr": 0.001, "width": 64, "depth": 4, "heads": 4, "meta_batch": 64}, [64]),
}


def _family(name: str, **options: object) -> object:
    import metaopt.tasks

    return getattr(metaopt.tasks, name)(**options)


def frozen_icl(family: str, context: int, iterations: int, seed: int) -> tuple[object, float]:
    """An ``icl`` trained on ``context``-point tasks of ``family`` with the trials' ``fit()``, frozen; and its training
    time."""
    from metaopt.incontext.frozen import TrainedModel
    from metaopt.learners.checkpoint import build_learner
    from metaopt.search.fit import fit

    make, hparams, hidden = FAMILIES[family]
    tasks = make(context)
    torch.manual_seed(seed)
    learner = build_learner("icl", hparams, backbone={"name": "mlp", "hidden": hidden}, task_kind="regression",
                            input_shape=tasks.input_shape, output_size=1, max_iterations=iterations)
    trained = fit(learner, tasks, iterations=iterations, compile="never", generator=torch.Generator().manual_seed(seed))
    return TrainedModel(learner), trained.seconds


def trained_selector(model: object, family: str, pool: int, context: int, iterations: int,
                     seed: int) -> tuple[object, float]:
    """``metaprompt`` meta-trained with ``fit()`` on training tasks of the pool family, against the frozen model."""
    from metaopt.incontext.metaprompt import MetaPrompt
    from metaopt.search.fit import fit

    tasks = FAMILIES[family][0](pool)
    torch.manual_seed(seed)
    hparams = MetaPrompt.resolve_hparams({"context": context, "outer_lr": 0.003, "meta_batch": 8})
    network = MetaPrompt.build_network({}, input_shape=tasks.input_shape, output_size=1, hparams=hparams)
    learner = MetaPrompt(network, hparams, task_kind="regression", max_iterations=iterations)
    learner.frozen = model
    trained = fit(learner, tasks, iterations=iterations, compile="never", generator=torch.Generator().manual_seed(seed))
    return learner, trained.seconds


def per_task_mse(predictions: Tensor, targets: Tensor) -> Tensor:
    """Each task's MSE over its queries."""
    return ((predictions - targets) ** 2).flatten(1).mean(1)


def mean_ci(values: Tensor) -> tuple[float, float]:
    """Mean and 95% CI half-width over tasks."""
    from metaopt.search.evaluation import mean_ci as ci

    return ci(values)


def chosen_mse(model: object, batch: object, indices: Tensor) -> Tensor:
    """Per-task MSE of the frozen model when each query sees the pool examples ``indices [tasks, Q, k]``."""
    from metaopt.incontext.selection import gather_context

    predictions = model.predict_each(gather_context(batch.support_x, indices), gather_context(batch.support_y, indices),
                                     batch.query_x)
    return per_task_mse(predictions, batch.query_y)


def best_of(model: object, batch: object, k: int, m: int, generator: torch.Generator) -> Tensor:
    """Per task, the best of ``m`` random contexts of ``k`` (one for all its queries) by the MSE on ``DEV`` other pool
    points; returns its indices ``[tasks, Q, k]``."""
    tasks, pool, queries = batch.support_x.shape[0], batch.support_x.shape[1], batch.query_x.shape[1]
    dev_x, dev_y = batch.support_x[:, -DEV:], batch.support_y[:, -DEV:]
    best, best_loss = None, None
    for _ in range(m):
        pick = torch.rand(tasks, pool - DEV, generator=generator).argsort(-1)[:, :k]  # never a dev point
        cx = torch.gather(batch.support_x, 1, pick[..., None].expand(-1, -1, batch.support_x.shape[-1]))
        cy = torch.gather(batch.support_y, 1, pick[..., None].expand(-1, -1, batch.support_y.shape[-1]))
        loss = per_task_mse(model.predict(cx, cy, dev_x), dev_y)
        if best is None:
            best, best_loss = pick, loss
        else:
            better = loss < best_loss
            best = torch.where(better[:, None], pick, best)
            best_loss = torch.where(better, loss, best_loss)
    return best[:, None, :].expand(tasks, queries, k)


def timed(select: Callable[[], Tensor], queries: int) -> tuple[Tensor, float]:
    """``select()`` and its time per query (ms)."""
    start = time.perf_counter()
    out = select()
    return out, 1000 * (time.perf_counter() - start) / queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=list(FAMILIES), default="sine")
    parser.add_argument("--pool", type=int, default=40)
    parser.add_argument("--context", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--selector-iterations", type=int, default=3000)
    parser.add_argument("--model", help="a frozen model's URI (default: train an icl here)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="default: benchmarks/results/metaprompt_<family>.json")
    args = parser.parse_args()
    args.json = args.json or str(RESULTS / f"metaprompt_{args.family}.json")
    torch.set_num_threads(1)

    from metaopt.incontext.frozen import TrainedModel
    from metaopt.incontext.selection import diverse_context, nearest_context, random_context
    from metaopt.search.evaluation import TEST_SEED

    if args.model:
        model, train_s = TrainedModel.load(args.model), 0.0
    else:
        model, train_s = frozen_icl(args.family, args.context, args.iterations, args.seed)
    family = FAMILIES[args.family][0](args.pool)
    batch = family.sample(args.tasks, "test", torch.Generator().manual_seed(TEST_SEED))
    queries = args.tasks * batch.query_x.shape[1]
    pool_x, query_x, k = batch.support_x, batch.query_x, args.context
    rows = {}

    randoms = []
    for seed in range(5):
        indices, ms = timed(lambda s=seed: random_context(pool_x, query_x, k, torch.Generator().manual_seed(s)), queries)
        randoms.append(chosen_mse(model, batch, indices))
    means = [r.mean().item() for r in randoms]
    rows["random (5 seeds)"] = (*mean_ci(torch.stack(randoms).mean(0)), ms, statistics.stdev(means))
    for name, select in (("nearest (KATE)", lambda: nearest_context(pool_x, query_x, k)),
                         ("diverse (farthest-point)", lambda: diverse_context(pool_x, query_x, k))):
        indices, ms = timed(select, queries)
        rows[name] = (*mean_ci(chosen_mse(model, batch, indices)), ms, None)
    selector, selector_s = trained_selector(model, args.family, args.pool, k, args.selector_iterations, args.seed)
    with torch.no_grad():
        indices, ms = timed(lambda: selector.choose(selector.meta_parameters(), batch, 1, greedy=True)[0][:, :, 0],
                            queries)
    rows[f"metaprompt ({args.selector_iterations} iterations, {selector_s:.0f} s)"] = (
        *mean_ci(chosen_mse(model, batch, indices)), ms, None)
    indices, ms = timed(lambda: best_of(model, batch, k, 20, torch.Generator().manual_seed(args.seed)), queries)
    rows["best of 20 on a dev split (reference)"] = (*mean_ci(chosen_mse(model, batch, indices)), ms, None)
    whole = model.predict(pool_x, batch.support_y, query_x)
    rows[f"whole pool ({args.pool} in context, limit)"] = (*mean_ci(per_task_mse(whole, batch.query_y)), 0.0, None)

    random_mse, best_mse = rows["random (5 seeds)"][0], rows["best of 20 on a dev split (reference)"][0]
    print(f"\n{args.family}, pool {args.pool}, context {k}: MSE on 10 queries of {args.tasks} test tasks (mean ± 95% CI); "
          f"frozen icl ({'from ' + args.model if args.model else f'{args.iterations} iterations, {train_s:.0f} s'})")
    print(f"{'selection':<40}{'MSE':>20}{'gap closed':>12}{'ms/query':>10}")
    out = []
    for name, (mean, ci, ms, sd) in rows.items():
        closed = (random_mse - mean) / (random_mse - best_mse) if random_mse != best_mse else float("nan")
        text = f"{mean:.4f} ± {ci:.4f}" + (f" (sd {sd:.4f})" if sd is not None else "")
        print(f"{name:<40}{text:>20}{100 * closed:>11.0f}%{ms:>10.3f}")
        out.append({"selection": name, "mse": mean, "ci95": ci, "seed_sd": sd, "ms_per_query": ms,
                    "gap_closed": closed})
    Path(args.json).write_text(json.dumps({"benchmark": "metaprompt_table", "family": args.family, "pool": args.pool,
                                           "context": k, "tasks": args.tasks, "model": args.model or "icl",
                                           "iterations": args.iterations, "selector_iterations": args.selector_iterations,
                                           "rows": out}, indent=1))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
