"""A real search of Conv-4 MAML trials with ``compile: always``: what each trial's compile costs.

The first trial compiles the meta-step cold (minutes on Conv-4); the next trials differ in the
inner learning rate, an input of the compiled meta-gradient rather than a constant of its graph,
so they should find the first trial's graph in the machine's inductor cache (README, "compile").
The search runs as ``metaopt search`` does (local Ray, one trial at a time, an MLflow store of its
own) on a fresh inductor cache, and reads each trial's ``metaopt.compile_seconds`` and
``metaopt.compile_cache_warm`` tags back from the store.

    python benchmarks/compile_search.py [--trials 2] [--meta-batch 4] [--iterations 40] [--json ...]

Writes ``--json`` (default ``benchmarks/results/compile_search.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def job(trials: int, meta_batch: int, iterations: int) -> dict:
    """Glyphs 5w1s, second-order Conv-4 MAML only, each trial another inner learning rate, compiled from the start."""
    rates = [round(0.1 + 0.3 * i / max(trials - 1, 1), 3) for i in range(trials)]
    return {
        "name": "compile-search", "family": {"name": "glyphs", "ways": 5, "shots": 1, "queries": 5},
        "methods": ["maml"], "baselines": [], "backbone": {"name": "conv4"},
        "space": {"maml": {"inner_lr": {"type": "float", "low": 0.05, "high": 0.5, "log": True},
                           "outer_lr": 0.001, "inner_steps": 1, "meta_batch": meta_batch}},
        "enqueue": [{"method": "maml", "inner_lr": r} for r in rates],
        "budget": {"trials": trials, "meta_iterations": iterations, "eval_interval": iterations,
                   "val_tasks": 20, "test_tasks": 20},
        "pruner": {"type": "none"}, "resources": {"cpus_per_trial": 1, "max_concurrent": 1},
        "compile": "always", "seed": 0,
    }


def main() -> None:
    """Run the search on a fresh inductor cache, print each trial's compile time, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=40, help="meta-iterations per trial")
    parser.add_argument("--json", default=str(RESULTS / "compile_search.json"))
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="metaopt-compile-search-"))
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder / "inductor")  # cold for the first trial; Ray workers inherit it
    from mlflow.tracking import MlflowClient

    from metaopt.api import run

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    start = time.perf_counter()
    summary = run(job(args.trials, args.meta_batch, args.iterations), tracking_uri=uri, workdir=folder / "work",
                  progress=False)
    seconds = time.perf_counter() - start
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.`metaopt.compile_seconds` != ''")
    by_number = {int(r.data.tags["metaopt.trial_number"]): r for r in runs if "metaopt.trial_number" in r.data.tags}
    rows = []
    for number, r in sorted(by_number.items()):
        tags = r.data.tags
        rows.append({"trial": number, "inner_lr": float(r.data.params.get("inner_lr", "nan")),
                     "compile_seconds": float(tags["metaopt.compile_seconds"]),
                     "cache_warm": float(tags.get("metaopt.compile_cache_warm", "nan")) == 1.0})
    print(f"\n{args.trials} Conv-4 second-order MAML trials, glyphs 5w1s, meta-batch {args.meta_batch}, "
          f"{args.iterations} meta-iterations each, compile: always, one thread ({seconds:.0f} s in all)")
    print("| trial | inner_lr | cache warm | compile s (first compiled step) |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['trial']} | {row['inner_lr']} | {'yes' if row['cache_warm'] else 'no'} | "
              f"{row['compile_seconds']:.1f} |")
    if len(rows) < args.trials:
        print(f"only {len(rows)} of {args.trials} trials recorded a compile (states: "
              f"{', '.join(r.state for r in summary.results)})")
    out = {"benchmark": "compile_search", "trials": args.trials, "meta_batch": args.meta_batch,
           "iterations": args.iterations, "search_seconds": seconds, "rows": rows}
    Path(args.json).parent.mkdir(exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
