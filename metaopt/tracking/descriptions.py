"""What the MLflow UI shows a person: a search's description, each trial's one line, its best-so-far series.

Pure functions of a ``SearchSummary`` (and the links of a UI); the tracker writes what they return.
"""

from __future__ import annotations

from typing import Any

from metaopt.search.results import MethodRow, SearchSummary
from metaopt.search.trial import TrialResult
from metaopt.tasks.metrics import Metric


def score(row: MethodRow, metric: Metric) -> str:
    """``mean ± CI`` of the row's test ``metric``, as the metric is shown (rates in percent)."""
    return metric.show_ci(row.test_mean(metric.name), row.test_ci(metric.name))


def ranks(summary: SearchSummary) -> dict[int, int]:
    """Rank (1 = best) of each finished trial by its validation score, by the primary metric's direction."""
    done = [r for r in summary.results if r.state == "complete" and r.value is not None]
    ordered = sorted(done, key=lambda r: r.value, reverse=summary.metric.higher_is_better)
    return {r.number: i + 1 for i, r in enumerate(ordered)}


def trial_line(result: TrialResult, summary: SearchSummary, rank: int | None) -> str:
    """One line for a trial's run: method, outcome, why it stopped, its rank."""
    metric = summary.metric
    value = f"validation {metric.label} {metric.show(result.value)}"
    total = sum(r.state == "complete" for r in summary.results)
    if result.state == "complete":
        where = f"rank {rank} of {total} finished trials" if rank else "finished"
        return f"**{result.method}**, trial {result.number}: finished after {result.iterations} iterations, {value}; {where}."
    if result.state == "pruned":
        return f"**{result.method}**, trial {result.number}: {result.reason or 'pruned'}; {value} when stopped."
    return f"**{result.method}**, trial {result.number}: failed: {result.reason or 'unknown reason'}."


def progress_line(results: list[TrialResult], planned: int, metric: Metric, eta_s: float | None) -> str:
    """Where a running search stands: ``5 of 16 trials done; best so far maml (trial 3), validation MSE 0.41;
    about 2 min left``."""
    done = sum(r.state in ("complete", "pruned", "failed") for r in results)
    line = f"{done} of {planned} trials done"
    finished = [r for r in results if r.state == "complete" and r.value is not None]
    if finished:
        best = finished[0]
        for r in finished[1:]:
            if metric.better(r.value, best.value):
                best = r
        line += f"; best so far {best.method} (trial {best.number}), validation {metric.label} {metric.show(best.value)}"
    if eta_s is not None and done < planned:
        line += f"; about {_duration(eta_s)} left"
    return line


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def best_so_far(results: list[TrialResult], metric: Metric) -> dict[str, list[tuple[int, float]]]:
    """``best_val_<metric>`` (overall) and ``best_val_<metric>/<method>`` as (trial number, best so far) series."""
    series: dict[str, list[tuple[int, float]]] = {}
    best: dict[str, float] = {}
    done = sorted((r for r in results if r.state == "complete" and r.value is not None), key=lambda r: r.number)
    for r in done:
        for name in (f"best_val_{metric.name}", f"best_val_{metric.name}/{r.method}"):
            if name not in best or metric.better(r.value, best[name]):
                best[name] = r.value
            series.setdefault(name, []).append((r.number, best[name]))
    return series


def leaderboard_table(summary: SearchSummary) -> dict[str, list[Any]]:
    """The leaderboard as columns (MLflow's table artifact): rank, method, strategy, scores, trial counts, run."""
    from metaopt.tracking.board import settings

    metric = summary.metric
    columns: dict[str, list[Any]] = {"rank": [], "method": [], "strategy": [], f"val {metric.label}": []}
    for m in summary.metrics:
        columns[f"test {m.label}"] = []
        columns[f"test {m.label} 95% CI"] = []
    for name in ("settings", "finished", "pruned", "failed", "run"):
        columns[name] = []
    for i, row in enumerate(summary.rows, 1):
        columns["rank"].append(i if row.best_val is not None else None)
        columns["method"].append(row.method)
        columns["strategy"].append(row.strategy)
        columns[f"val {metric.label}"].append(row.best_val)
        for m in summary.metrics:
            columns[f"test {m.label}"].append(row.test_mean(m.name))
            columns[f"test {m.label} 95% CI"].append(row.test_ci(m.name))
        columns["settings"].append(settings({"method": row.method, **row.hparams}) if row.run_id else None)
        columns["finished"].append(row.complete)
        columns["pruned"].append(row.pruned)
        columns["failed"].append(row.failed)
        columns["run"].append(row.run_id)
    return columns


def search_note(summary: SearchSummary, *, run_url: Any, model_url: Any) -> str:
    """The search's description (markdown): who won and by how much, the leaderboard, how the trials went.

    ``run_url(run_id)`` and ``model_url(name, version)`` give the UI's links.
    """
    metric = summary.metric
    decision = summary.decision
    lines = []
    if decision is not None:
        from metaopt.tracking.store import registered_model_name

        name = registered_model_name(summary.key)
        if decision.moved and summary.champion_version:
            lines.append(f"**Champion: {decision.best.method}**, now [{name} version {summary.champion_version}]"
                         f"({model_url(name, summary.champion_version)}) (`{name}@champion`): {decision.reason}.")
        else:
            lines.append(f"**Champion unchanged** ([{name}]({model_url(name, None)})): {decision.reason}.")
    if summary.champion is not None:
        champ = summary.champion
        lines.append(f"**Best of this search: {champ.method}**, test {metric.label} {score(champ, metric)} "
                     f"([trial {champ.trial_number}]({run_url(champ.run_id)})).")
    if summary.verdict:
        lines.append(f"**Does meta-learning pay?** {summary.verdict[0].upper()}{summary.verdict[1:]}.")
    lines += ["", f"Search {summary.search_id} of `{summary.key}`: {len(summary.results)} trials "
              f"({sum(r.state == 'complete' for r in summary.results)} finished, "
              f"{sum(r.state == 'pruned' for r in summary.results)} pruned, "
              f"{sum(r.state == 'failed' for r in summary.results)} failed) in {summary.seconds:.0f} s; methods "
              f"ranked by validation {metric.label}, each one's best trial scored on held-out test tasks."]
    lines += [f"Note: {note}" for note in summary.notes]
    if summary.interrupted:
        lines.append(f"**Interrupted** ({summary.interrupted}): continue with `metaopt resume {summary.search_id}`.")
    lines += ["", f"| rank | method | val {metric.label} | " + " | ".join(f"test {m.label} ± 95% CI"
                                                                  for m in summary.metrics)
              + " | settings | finished / pruned / failed | best trial |",
              "| --- | --- | --- | " + " | ".join("---" for _ in summary.metrics) + " | --- | --- | --- |"]
    from metaopt.tracking.board import settings

    candidates = [r for r in summary.rows if r.method != summary.limit]
    for i, row in enumerate(candidates + [r for r in summary.rows if r.method == summary.limit], 1):
        trial = f"[{row.trial_number}]({run_url(row.run_id)})" if row.run_id else "-"
        place = "limit (reference)" if row.method == summary.limit else i if row.best_val is not None else "-"
        lines.append(f"| {place} | {row.method} | {metric.show(row.best_val)} | "
                     + " | ".join(score(row, m) for m in summary.metrics)
                     + f" | {settings({'method': row.method, **row.hparams}) if row.run_id else '-'}"
                     + f" | {row.complete} / {row.pruned} / {row.failed} | {trial} |")
    return "\n".join(lines)
