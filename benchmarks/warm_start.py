"""Does warm start pay? Leave-one-key-out over the keys of three families, replayed from a table (Feurer et al. 2015).

Step 1 (``--evaluate``, the costly part, resumable): for each family, the same fixed set of configurations, drawn
at random from the family's search-space file, is trained on every key of the family with the trials' own
``train()`` (a short budget) and its validation score recorded, one line per (key, configuration), in
``benchmarks/results/warm_start.table.jsonl``.

Step 2 (the default): for each key in turn, with the other keys of its family as the store's history, searches
of ``--trials`` trials replay from the table, ``--seeds`` seeds each:

- ``cold tpe`` and ``cold random``: metaopt's ``tpe`` and ``random`` strategies, no history;
- ``warm tpe``: what ``warm_start: auto`` does — ``history.distance`` orders the other keys, ``history.warm_plan``
  takes each method's best configuration from the nearest ones (one per method), they are enqueued first; once they
  are scored, ``warm.second_round`` adds the sources' next-best configurations of the method that scored best (at
  most a quarter of the trials in all); then ``warm.local_step``'s local steps around the best so far, one a trial,
  until every method near the best has ``warm.settled``; then metaopt's ``tpe``;
- ``warm cmaes``: Optuna's warm-started CMA-ES (``CmaEsSampler(source_trials=...)``, the nearest key's table as
  its source). CMA-ES models numbers only, so it searches one flat space — every method's numeric hyperparameters
  at once — and the method (a choice) is drawn by its independent sampler (TPE);

A sampled configuration is scored as the table's nearest configuration of the same method (the distance of
``history.distance`` over the hyperparameters, on a log scale where the space is): each trial costs one table
lookup. Reported per key and strategy: the best validation score after 25 and 50 trials (mean over seeds), the
trials to come within 5% (and 1%) of the key's best known value (the table's best; ``|v - best| <= x |best|``;
a search that never does counts ``trials + 1``), and for warm tpe against cold tpe, a Mann-Whitney U test (two-sided,
p < 0.05) over the seeds at 25 and 50 trials: a significant win, loss or neither (with more than 10 seeds, also
over the first 10 alone).

    python benchmarks/warm_start.py --evaluate [--configs 60] [--workers 2]   # the table (about an hour on 2 cores)
    python benchmarks/warm_start.py [--trials 50] [--seeds 20]               # the replay (minutes)
    python benchmarks/warm_start.py --report                                  # its recorded tables again
    python benchmarks/warm_start.py --real [--real-family sine|functions --real-trials 20 --real-seeds 3]
    python benchmarks/warm_start.py --real-report benchmarks/results/warm_start_real_functions.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _cells import load_cells, run_cells

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
TABLE = RESULTS / "warm_start.table.jsonl"


@dataclass(frozen=True)
class Family:
    """A family of the benchmark: its keys (option sets), the methods searched, their space, the training budget."""

    name: str
    base: dict[str, Any]
    keys: list[dict[str, Any]]
    methods: list[str]
    space: str
    budget: dict[str, Any]
    backbones: dict[str, Any] | None = None


FAMILIES = [
    Family("sine", {"name": "sine", "queries": 10},
           [{"shots": s} for s in (2, 5, 10, 20, 40)],
           ["maml", "fomaml", "reptile", "anil", "metasgd", "cnp"], "search_spaces/sine.yaml",
           {"meta_iterations": 1000, "eval_interval": 1000, "val_tasks": 200}),
    Family("functions", {"name": "functions", "dim": 5, "queries": 10, "noise": 0.5},
           [{"function": "linear", "points": 10}, {"function": "linear", "points": 20},
            {"function": "sparse-linear", "points": 10}, {"function": "relu-net", "points": 10},
            {"function": "tree", "points": 10}],
           ["cnp", "maml", "ridge", "lasso", "knn", "support_net", "boosted_trees"], "search_spaces/functions.yaml",
           {"meta_iterations": 1000, "eval_interval": 1000, "val_tasks": 200}, {"maml": {"name": "mlp", "hidden": [64]}}),
    Family("bandit", {"name": "bandit"},
           [{"arms": 2, "pulls": 10}, {"arms": 5, "pulls": 10}, {"arms": 10, "pulls": 10}, {"arms": 5, "pulls": 20},
            {"arms": 10, "pulls": 20}],
           ["rl2", "maml", "epsilon_greedy", "ucb1"], "search_spaces/bandit.yaml",
           {"meta_iterations": 100, "eval_interval": 100, "val_tasks": 300},
           {"maml": {"name": "mlp", "hidden": [64, 64]}}),
]


def job_data(family: Family, options: dict[str, Any]) -> dict[str, Any]:
    """The job a key's searches would run (no tracker: the trials' ``train()`` alone)."""
    data = {"name": "warm-start-bench", "family": {**family.base, **options}, "methods": family.methods,
            "search_space": str(ROOT / family.space), "budget": {"trials": 1, **family.budget},
            "seed": 0, "compile": "never", "resources": {"cpus_per_trial": 1}}
    if family.backbones:
        data["backbones"] = family.backbones
    return data


def loaded(family: Family, options: dict[str, Any]) -> Any:
    """The validated job and space of a key (relative paths as the job file would have them)."""
    from metaopt.search.job import load_job_data

    return load_job_data(job_data(family, options), ROOT / "jobs" / "warm-start-bench.yaml")


def draw_configs(family: Family, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` configurations drawn at random from the family's space (the same for every key), each once."""
    import optuna

    space = loaded(family, family.keys[0]).space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(20 * n):
        if len(configs) == n:
            break
        method, hparams = space.suggest(study.ask())
        config = {"method": method, **hparams}
        text = json.dumps(config, sort_keys=True)
        if text not in seen:  # a method with no searched value has one configuration
            seen.add(text)
            configs.append(config)
    return configs


def key_of(family: Family, options: dict[str, Any]) -> str:
    """The key a family's options make (``sine-5shot-q10``)."""
    return loaded(family, options).job.family.key


def evaluate(family_name: str, options: dict[str, Any], index: int, config: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration on one key with the trials' ``train()`` and return its validation score."""
    torch.set_num_threads(1)
    from metaopt.search.reporting import Reporter, _NullLog
    from metaopt.search.trial import TrialConfig, train

    family = next(f for f in FAMILIES if f.name == family_name)
    job = loaded(family, options).job
    hparams = {k: v for k, v in config.items() if k != "method"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        trial = TrialConfig("bench", index, config["method"], hparams, job, folder)
        try:
            value = train(trial, Reporter(None, _NullLog(), trial.checkpoint_path))
        except Exception as exc:  # noqa: BLE001 - a configuration that fails is recorded as failed
            value, reason = math.nan, f"{type(exc).__name__}: {exc}"[:200]
        else:
            reason = None
    return {"family": family_name, "options": options, "key": job.family.key, "index": index, "config": config,
            "value": value if math.isfinite(value) else None, "reason": reason,
            "metric": job.family.primary_metric.name, "higher_is_better": job.family.primary_metric.higher_is_better,
            "budget": family.budget, "seconds": round(time.perf_counter() - start, 2)}


def run_evaluate(args: argparse.Namespace) -> None:
    """Step 1: fill the table, reusing the lines already there with the same configuration and budget."""
    wanted = [f for f in FAMILIES if f.name in args.families]
    configs = {f.name: draw_configs(f, args.configs) for f in wanted}

    def same(cell: dict) -> bool:
        family = next((f for f in wanted if f.name == cell["family"]), None)
        return (family is not None and cell["budget"] == family.budget and cell["index"] < len(configs[family.name])
                and cell["config"] == configs[family.name][cell["index"]])

    done = load_cells(TABLE, same, lambda c: (c["key"], c["index"]))
    jobs = {}
    for index in range(args.configs):  # configuration-major: every key gets its first configurations first
        for family in wanted:
            for options in family.keys:
                key = key_of(family, options)
                if (key, index) not in done and index < len(configs[family.name]):
                    jobs[(key, index)] = (family.name, options, index, configs[family.name][index])
    print(f"{len(jobs)} configurations to train, {len(done)} in {TABLE}")
    run_cells(TABLE, jobs, evaluate, workers=args.workers, describe=lambda c: (
        f"{c['key']:<28} #{c['index']:<3} {c['config']['method']:<14} "
        f"{'failed' if c['value'] is None else format(c['value'], '.4g'):>10}  ({c['seconds']:.1f}s)"))


# ---- step 2: the replay ------------------------------------------------------------------------------------------

STRATEGIES = ("cold tpe", "cold random", "warm tpe", "warm cmaes")


@dataclass
class KeyTable:
    """One key's row of the table: its options, metric direction, and each method's evaluated configurations."""

    family: Family
    key: str
    options: dict[str, Any]
    higher_is_better: bool
    configs: dict[str, list[tuple[dict[str, Any], float | None]]]  # method -> [(hyperparameters, value)]

    @property
    def best(self) -> float:
        """The key's best known value: the table's best."""
        values = [v for rows in self.configs.values() for _, v in rows if v is not None]
        return max(values) if self.higher_is_better else min(values)

    def better(self, a: float, b: float) -> bool:
        """``a`` is better than ``b`` on this key's metric."""
        return a > b if self.higher_is_better else a < b


def read_table(path: Path = TABLE) -> dict[str, KeyTable]:
    """The table of step 1, by key (the last line of a (key, configuration) pair wins)."""
    cells: dict[tuple[str, int], dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            cell = json.loads(line)
            family = next((f for f in FAMILIES if f.name == cell["family"]), None)
            if family is not None and cell["budget"] == family.budget:
                cells[(cell["key"], cell["index"])] = cell
    tables: dict[str, KeyTable] = {}
    for (key, _), cell in sorted(cells.items()):
        family = next(f for f in FAMILIES if f.name == cell["family"])
        table = tables.setdefault(key, KeyTable(family, key, cell["options"], cell["higher_is_better"], {}))
        config = dict(cell["config"])
        table.configs.setdefault(config.pop("method"), []).append((config, cell["value"]))
    return tables


def snap_distance(a: dict[str, Any], b: dict[str, Any], space: dict[str, Any]) -> float:
    """How far two configurations of one method are apart: each searched number as a share of its range (on a log
    scale where the space is), 1 for a different choice."""
    from metaopt.search.ranges import Categorical, FloatRange, IntRange

    total = 0.0
    for name, spec in space.items():
        if isinstance(spec, (FloatRange, IntRange)):
            scale = math.log if spec.log else (lambda v: v)
            span = (scale(spec.high) - scale(spec.low)) or 1.0
            total += abs(scale(a[name]) - scale(b[name])) / span
        elif isinstance(spec, Categorical):
            total += float(a[name] != b[name])
    return total


def lookup(table: KeyTable, space: Any, method: str, hparams: dict[str, Any]) -> float | None:
    """The value of the table's configuration of ``method`` nearest to ``hparams`` (None: it failed)."""
    rows = table.configs[method]
    _, value = min(rows, key=lambda row: snap_distance(hparams, row[0], space.spaces[method]))
    return value


def replay_space(table: KeyTable) -> Any:
    """The key's search space, cut to the methods the table holds."""
    from metaopt.search.space import SearchSpace

    space = loaded(table.family, table.options).space
    methods = [m for m in space.methods if m in table.configs]
    return SearchSpace(methods, {m: space.spaces[m] for m in methods}, space.task_kind)


def warm_sources(table: KeyTable, tables: dict[str, KeyTable]) -> list[Any]:
    """The store's history as ``history.sources`` would find it: the family's other keys, nearest first, each with the
    ``PER_METHOD`` best configurations of each of its methods (best first)."""
    from metaopt.tracking.history import PER_METHOD, Config, Source, distance

    found = []
    for other in tables.values():
        if other.family.name != table.family.name or other.key == table.key:
            continue
        best = []
        for method, rows in other.configs.items():
            done = sorted([(c, v) for c, v in rows if v is not None], key=lambda row: row[1],
                          reverse=other.higher_is_better)
            best += [Config(method, c, v) for c, v in done[:PER_METHOD]]
        best.sort(key=lambda c: -c.val if other.higher_is_better else c.val)
        found.append(Source(other.key, distance(table.options, other.options), "", best))
    return sorted(found, key=lambda s: (s.distance, s.key))


def search(table: KeyTable, tables: dict[str, KeyTable], strategy: str, seed: int, trials: int) -> list[float | None]:
    """One replayed search: the value of each trial in order (None for a configuration that failed)."""
    import optuna

    from metaopt.search import warm
    from metaopt.search.strategies import STRATEGIES as METAOPT
    from metaopt.tracking.history import warm_plan

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = replay_space(table)
    direction = "maximize" if table.higher_is_better else "minimize"
    if strategy == "warm cmaes":
        return _cmaes_search(table, tables, space, direction, seed, trials)
    kind = METAOPT["random" if strategy == "cold random" else "tpe"]()
    study = optuna.create_study(direction=direction, sampler=kind.study_sampler(seed, space))
    if strategy == "warm tpe":  # exactly as a search does (metaopt.search.loop): the plan, then gated before each ask
        warm.record_plan(study, space, warm_plan(warm_sources(table, tables), space, limit=max(1, trials // 4)),
                         enqueued_before=0)
    values: list[float | None] = []
    for _ in range(trials):
        warm.gate(study, space) or warm.refine(study, space)
        trial = study.ask()
        method, hparams = kind.ask(trial, space)
        value = lookup(table, space, method, hparams)
        study.tell(trial, value if value is not None else None,
                   state=optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL)
        values.append(value)
    return values


def _flat(space: Any) -> dict[str, Any]:
    """Every method's numeric hyperparameters as one fixed set of Optuna distributions (what CMA-ES can model)."""
    import optuna

    from metaopt.search.ranges import FloatRange, IntRange

    flat = {}
    for method in space.methods:
        for name, spec in space.spaces[method].items():
            if isinstance(spec, FloatRange):
                flat[f"{method}.{name}"] = optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log)
            elif isinstance(spec, IntRange):
                flat[f"{method}.{name}"] = optuna.distributions.IntDistribution(spec.low, spec.high, log=spec.log)
    return flat


def _cmaes_search(table: KeyTable, tables: dict[str, KeyTable], space: Any, direction: str, seed: int,
                  trials: int) -> list[float | None]:
    """Optuna's warm-started CMA-ES over the flat numeric space; its source: the nearest other key's whole table."""
    import random

    import optuna

    from metaopt.search.ranges import Categorical
    from metaopt.search.strategies.base import quiet, tpe

    flat = _flat(space)
    nearest = tables[warm_sources(table, tables)[0].key]
    rng = random.Random(seed)
    source = []
    for method, rows in nearest.configs.items():
        if method not in space.methods:
            continue
        for config, value in rows:
            if value is None:
                continue
            params, dists = {}, {}  # only the numbers: CMA-ES takes a source trial of exactly its own space
            for name, dist in flat.items():  # another method's numbers: anywhere in their range
                own = name.split(".", 1)[0] == method
                low, high = dist.low, dist.high
                drawn = math.exp(rng.uniform(math.log(low), math.log(high))) if dist.log else rng.uniform(low, high)
                raw = config[name.split(".", 1)[1]] if own else drawn
                params[name] = int(round(raw)) if isinstance(dist, optuna.distributions.IntDistribution) else raw
                dists[name] = dist
            source.append(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    sampler = quiet(lambda: optuna.samplers.CmaEsSampler(  # it keeps its best tenth: fewer than 10 start it cold
        seed=seed, source_trials=source if len(source) >= 10 else None, independent_sampler=tpe(seed), warn_independent_sampling=False))
    study = optuna.create_study(direction=direction, sampler=sampler)
    values: list[float | None] = []
    for _ in range(trials):
        trial = study.ask()
        drawn = {name: trial._suggest(name, dist) for name, dist in flat.items()}
        method = trial.suggest_categorical("method", space.methods)
        hparams = {}
        for name, spec in space.spaces[method].items():
            if f"{method}.{name}" in drawn:
                hparams[name] = drawn[f"{method}.{name}"]
            elif isinstance(spec, Categorical):
                hparams[name] = trial.suggest_categorical(f"{method}.{name}", spec.choices)
        value = lookup(table, space, method, hparams)
        study.tell(trial, value, state=optuna.trial.TrialState.COMPLETE if value is not None
                   else optuna.trial.TrialState.FAIL)
        values.append(value)
    return values


def best_so_far(values: list[float | None], table: KeyTable) -> list[float | None]:
    """The best value after each trial."""
    out, best = [], None
    for v in values:
        if v is not None and (best is None or table.better(v, best)):
            best = v
        out.append(best)
    return out


def trials_to(curve: list[float | None], table: KeyTable, within: float) -> int:
    """The first trial (1-based) whose best is within ``within`` (a share) of the key's best known value; the trials
    plus one if none is."""
    target = table.best
    for i, v in enumerate(curve, 1):
        if v is not None and abs(v - target) <= within * abs(target) + 1e-12:
            return i
    return len(curve) + 1


def replay_key(key: str, strategies: tuple[str, ...], seeds: int, trials: int) -> dict[str, Any]:
    """Every strategy's searches of one key, ``seeds`` each: their curves and summary figures."""
    torch.set_num_threads(1)
    tables = read_table()
    table = tables[key]
    start = time.perf_counter()
    out: dict[str, Any] = {"key": key, "family": table.family.name, "best": table.best,
                           "higher_is_better": table.higher_is_better, "configs": sum(map(len, table.configs.values())),
                           "sources": [(s.key, s.distance) for s in warm_sources(table, tables)], "strategies": {}}
    for strategy in strategies:
        curves = [best_so_far(search(table, tables, strategy, seed, trials), table) for seed in range(seeds)]
        out["strategies"][strategy] = {
            "curves": curves,
            "to_5pct": [trials_to(c, table, 0.05) for c in curves],
            "to_1pct": [trials_to(c, table, 0.01) for c in curves],
        }
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def significance(a: list[float], b: list[float], higher_is_better: bool) -> str:
    """``win`` where ``a`` is better than ``b`` by a two-sided Mann-Whitney U test at p < 0.05, ``loss`` where worse,
    else ``-``."""
    from scipy.stats import mannwhitneyu

    if a == b or len(set(a) | set(b)) == 1:
        return "-"
    p = mannwhitneyu(a, b, alternative="two-sided").pvalue
    if p >= 0.05:
        return "-"
    ahead = statistics.mean(a) > statistics.mean(b)
    return "win" if ahead == higher_is_better else "loss"


def at(curves: list[list[float | None]], t: int) -> list[float]:
    """Each seed's best after ``t`` trials."""
    return [c[min(t, len(c)) - 1] for c in curves if c[min(t, len(c)) - 1] is not None]


def report(results: list[dict[str, Any]], trials: int) -> dict[str, Any]:
    """Print the per-key table and the summary against the goals; return the summary."""
    checkpoints = [t for t in (25, 50) if t <= trials] or [trials]
    print(f"\n{'key':<48}{'best':>9}  " + "".join(f"{s:>14}" for s in STRATEGIES)
          + "".join(f"{f'vs cold @{t}':>12}" for t in checkpoints))
    print(f"{'':<48}{'':>9}  " + "".join(f"{'to 5% (1%)':>14}" for _ in STRATEGIES))
    summary: dict[str, Any] = {"keys": len(results), "at": {}}
    for t in checkpoints:
        summary["at"][t] = {s: {"win": 0, "loss": 0} for s in STRATEGIES if not s.startswith("cold")}
    ratios = []
    for r in results:
        table = r["strategies"]
        line = f"{r['key']:<48}{r['best']:>9.4g}  "
        for s in STRATEGIES:
            five, one = statistics.mean(table[s]["to_5pct"]), statistics.mean(table[s]["to_1pct"])
            line += f"{f'{five:.1f} ({one:.1f})':>14}"
        for t in checkpoints:
            marks = []
            for s in ("warm tpe", "warm cmaes"):
                verdict = significance(at(table[s]["curves"], t), at(table["cold tpe"]["curves"], t),
                                       r["higher_is_better"])
                if verdict != "-":
                    summary["at"][t][s][verdict] += 1
                marks.append({"win": "+", "loss": "-", "-": "."}[verdict])
            line += f"{'/'.join(marks):>12}"
        ratios.append(statistics.mean(table["cold tpe"]["to_5pct"]) / statistics.mean(table["warm tpe"]["to_5pct"]))
        print(line)
    summary["median_speedup_to_5pct"] = statistics.median(ratios)
    summary["slower_to_5pct"] = [r["key"] for r, ratio in zip(results, ratios) if ratio < 1]
    print("\nvs cold: warm tpe / warm cmaes against cold tpe, Mann-Whitney U over the seeds (+ win, - loss, . neither)")
    for t, by in summary["at"].items():
        for s, counts in by.items():
            n = len(results)
            print(f"  at {t:>3} trials, {s:<10}: wins on {counts['win']}/{n} keys ({100 * counts['win'] / n:.0f}%), "
                  f"losses on {counts['loss']}/{n} ({100 * counts['loss'] / n:.0f}%)")
    print(f"  trials to within 5% of the best known value, cold tpe / warm tpe, median over keys: "
          f"{summary['median_speedup_to_5pct']:.2f}x; warm tpe slower there on "
          f"{len(summary['slower_to_5pct'])}/{len(results)} keys ({', '.join(summary['slower_to_5pct']) or 'none'})")
    return summary


FEW_SEEDS = 10  # the acceptance's least number of seeds


def first_seeds(result: dict[str, Any], n: int) -> dict[str, Any]:
    """One key's replay (``replay_key``) cut to its first ``n`` seeds."""
    return {**result, "strategies": {s: {k: v[:n] for k, v in by.items()} for s, by in result["strategies"].items()}}


def summarised(out: dict[str, Any]) -> dict[str, Any]:
    """A replay's record with its summaries, the tables printed (all seeds; past 10, the first 10 alone too)."""
    out = {**out, "summary": report(out["keys"], out["trials"])}
    if out["seeds"] > FEW_SEEDS:  # the same searches' first seeds alone: what the tests say with less power
        print(f"\n-- the first {FEW_SEEDS} seeds only --")
        out[f"summary_first_{FEW_SEEDS}_seeds"] = report([first_seeds(r, FEW_SEEDS) for r in out["keys"]],
                                                        out["trials"])
    return out


def report_replay(path: Path) -> None:
    """Print a recorded replay's tables and refresh its summaries (nothing replayed)."""
    if not path.exists():
        raise SystemExit(f"{path}: no recorded replay; run `python benchmarks/warm_start.py` first")
    recorded = json.loads(path.read_text())
    path.write_text(json.dumps(summarised(recorded), indent=1))


def run_replay(args: argparse.Namespace) -> None:
    """Step 2: replay every key's searches (keys in parallel), print the tables, write the JSON."""
    tables = read_table()
    keys = [k for k, t in tables.items() if t.family.name in args.families]
    if len(keys) < 2:
        raise SystemExit(f"{TABLE}: fewer than two keys in the table; run --evaluate first")
    print(f"{len(keys)} keys, {args.seeds} seeds x {len(STRATEGIES)} strategies x {args.trials} trials each")
    out_cells = Path(args.json).with_suffix(".replay.jsonl")
    out_cells.unlink(missing_ok=True)
    results = run_cells(out_cells, {k: (k, STRATEGIES, args.seeds, args.trials) for k in keys}, replay_key,
                        workers=args.workers, describe=lambda r: f"{r['key']} ({r['seconds']:.0f}s)")
    out = summarised({"benchmark": "warm_start", "trials": args.trials, "seeds": args.seeds,
                      "keys": [results[k] for k in keys]})
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"\nwrote {args.json}")


# ---- a real search of a held-out key, warm against cold -----------------------------------------------------------

# Per family: the source keys searched once, the held-out key, the trials' meta-iterations.
REAL = {
    "sine": ([{"shots": 5}, {"shots": 20}], {"shots": 10}, 2000),
    "functions": ([{"function": "linear", "points": 20}, {"function": "sparse-linear", "points": 10}],
                  {"function": "linear", "points": 10}, 1000),
}


def real_job(family: Family, options: dict[str, Any], seed: int, warm: str | list[str], trials: int,
             iterations: int) -> dict[str, Any]:
    """A real search of one key (the table's methods and space, a longer budget)."""
    name = f"{family.name}-{'cold' if warm == 'off' else 'warm'}-seed{seed}"
    return {**job_data(family, options), "name": name, "seed": seed,
            "budget": {"trials": trials, "meta_iterations": iterations, "eval_interval": iterations // 2,
                       "val_tasks": 200, "test_tasks": 500},
            "pruner": {"type": "none"}, "warm_start": warm}


def run_real(args: argparse.Namespace) -> None:
    """Search two source keys into a store (once), then the held-out key cold and warm-started from them (their keys
    named), several seeds each; report the trials each warm search took to reach its cold twin's final best."""
    from metaopt.api import run

    torch.set_num_threads(1)
    family = next(f for f in FAMILIES if f.name == args.real_family)
    source_options, target, iterations = REAL[family.name]
    folder = Path(args.store) / family.name
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"

    def search(options: dict[str, Any], seed: int, warm: str | list[str]) -> Any:
        start = time.perf_counter()
        summary = run(real_job(family, options, seed, warm, args.real_trials, iterations), in_process=True,
                      tracking_uri=uri,
                      workdir=folder / "work", progress=False)
        print(f"  {summary.search_id}: best validation {summary.metric.show(_best(summary))} "
              f"({time.perf_counter() - start:.0f}s)", flush=True)
        return summary

    from mlflow.tracking import MlflowClient

    from metaopt.tracking.history import last_search

    client = MlflowClient(uri)
    sources = [key_of(family, options) for options in source_options]
    for options, key in zip(source_options, sources):
        experiment = client.get_experiment_by_name(f"metaopt-{key}")
        if experiment is None or last_search(client, experiment.experiment_id) is None:  # searched once per store
            search(options, 0, "off")
    rows = []
    for seed in range(args.real_seeds):
        # The sources named: the store also holds the held-out key's own searches (the cold twins), which
        # `warm_start: auto` would take first (distance 0); a held-out key has no history of its own.
        cold, warm = search(target, seed, "off"), search(target, seed, sources)
        cold_best = _best(cold)
        curve = _curve(warm)
        reached = next((i for i, v in enumerate(curve, 1)
                        if v is not None and not cold.metric.better(cold_best, v)), None)
        cold_at = _curve(cold).index(cold_best) + 1
        rows.append({"seed": seed, "cold_best": cold_best, "cold_best_at": cold_at, "warm_best": _best(warm),
                     "warm_reaches_cold_best_at": reached, "cold_curve": _curve(cold), "warm_curve": curve,
                     "cold_trials": _trials(cold), "warm_trials": _trials(warm)})
    data = {"benchmark": "warm_start_real", "family": family.name, "target": key_of(family, target),
            "sources": sources, "trials": args.real_trials, "iterations": iterations,
            "higher_is_better": cold.metric.higher_is_better, "metric": cold.metric.label, "rows": rows}
    print_real(data)
    out = RESULTS / f"warm_start_real_{family.name}.json"
    out.write_text(json.dumps(data, indent=1))
    print(f"\nwrote {out}")


def print_real(data: dict[str, Any]) -> None:
    """The real searches' table: per seed, when the warm search reaches its cold twin's final best, and within
    0.2% and 1% of it (a validation score moves by that much between two settings of one method)."""
    higher, trials = data.get("higher_is_better", False), data["trials"]

    def at(curve: list[float | None], target: float, within: float) -> str:
        bound = target - within * abs(target) if higher else target + within * abs(target)
        return str(next((i for i, v in enumerate(curve, 1)
                         if v is not None and (v >= bound if higher else v <= bound)), f">{trials}"))

    print(f"\nheld-out key {data['target']}, sources {', '.join(data['sources'])}; {trials} trials x "
          f"{data['iterations']} meta-iterations, validation {data.get('metric', 'loss')}")
    print(f"{'seed':>4}  {'cold best':>10}  {'at trial':>8}  {'warm best':>10}  {'warm reaches it at':>18}"
          f"  {'within 0.2%: cold / warm':>24}  {'within 1%: cold / warm':>22}  {'after 10: cold / warm':>22}")
    for r in data["rows"]:
        cold, warm, best = r["cold_curve"], r["warm_curve"], r["cold_best"]
        ten = f"{cold[min(10, len(cold)) - 1]:.4f} / {warm[min(10, len(warm)) - 1]:.4f}"
        print(f"{r['seed']:>4}  {best:>10.4f}  {r['cold_best_at']:>8}  {r['warm_best']:>10.4f}  {at(warm, best, 0):>18}"
              f"  {at(cold, best, 0.002) + ' / ' + at(warm, best, 0.002):>24}"
              f"  {at(cold, best, 0.01) + ' / ' + at(warm, best, 0.01):>22}  {ten:>22}")


def _curve(summary: Any) -> list[float | None]:
    """The best validation score after each trial, by trial number."""
    best, out = None, []
    for r in sorted(summary.results, key=lambda r: r.number):
        if r.state == "complete" and r.value is not None and (best is None or summary.metric.better(r.value, best)):
            best = r.value
        out.append(best)
    return out


def _trials(summary: Any) -> list[dict[str, Any]]:
    """Each trial's method, hyperparameters, state and validation score, by trial number."""
    return [{"number": r.number, "method": r.method, "hparams": r.hparams, "state": r.state, "value": r.value}
            for r in sorted(summary.results, key=lambda r: r.number)]


def _best(summary: Any) -> float:
    """The search's best validation score."""
    return [v for v in _curve(summary) if v is not None][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluate", action="store_true", help="train the table's configurations (step 1)")
    parser.add_argument("--families", nargs="+", default=[f.name for f in FAMILIES])
    parser.add_argument("--configs", type=int, default=100, help="configurations per family (step 1)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=20,
                        help="searches per strategy and key (above 10, also reported for the first 10 alone)")
    parser.add_argument("--json", default=str(RESULTS / "warm_start.json"))
    parser.add_argument("--real", action="store_true", help="real searches of a held-out key, warm against cold")
    parser.add_argument("--real-trials", type=int, default=20)
    parser.add_argument("--real-seeds", type=int, default=3)
    parser.add_argument("--real-family", choices=list(REAL), default="sine")
    parser.add_argument("--store", default="/tmp/metaopt-warm-start-real", help="--real: the store's folder")
    parser.add_argument("--report", action="store_true", help="print the recorded replay's tables (--json), nothing run")
    parser.add_argument("--real-report", metavar="JSON", help="print a recorded real comparison's table, nothing run")
    args = parser.parse_args()
    if args.report:
        report_replay(Path(args.json))
    elif args.real_report:
        print_real(json.loads(Path(args.real_report).read_text()))
    elif args.real:
        run_real(args)
    elif args.evaluate:
        run_evaluate(args)
    else:
        run_replay(args)


if __name__ == "__main__":
    main()
