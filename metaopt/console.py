"""What a person reads in a terminal, the same from the ``metaopt`` command and from Python.

A search's progress (a bar with trials done, best so far, ETA; a line per trial), its
leaderboard and conclusion, and ``metaopt select``'s finalists. Every score is shown as its
metric says (``Metric.cell``: rates in percent).
"""

from __future__ import annotations

import math
import sys
from typing import Any

from metaopt.search.results import MethodRow, SearchSummary
from metaopt.tasks.metrics import REGRESSION, Metric


def _console() -> Any:
    from rich.console import Console

    # A terminal's own width; logs and pipes 80 columns, which every table fits.
    return Console(width=None if sys.stdout.isatty() else 80)


def render_leaderboard(rows: list[MethodRow], title: str, metrics: tuple[Metric, ...] | None = None,
                       limit: str | None = None) -> None:
    """Print method rows as a table (80 columns): the best validation score, the test mean ± 95% CI of each metric
    tables show, trial counts. The family's exact ``limit`` is a reference row, last and marked, never ranked.

    ``metrics``: the family's, the primary one first (what the validation column shows); default: MSE.
    """
    from rich.table import Table

    metrics = metrics or REGRESSION
    primary = metrics[0]
    shown = [m for m in metrics if m.in_tables and any(row.test_mean(m.name) is not None for row in rows)] or [primary]
    strategies = len({row.strategy for row in rows if row.strategy}) > 1
    caption = "± CI: 95% confidence interval over the test tasks; trials: finished/pruned/failed"
    if any(row.method == limit for row in rows):
        caption += "; * the family's exact limit, a reference and never the champion"
    tied = _within_noise([r for r in rows if r.method != limit], primary)
    if len(tied) > 1:
        caption += f"; {', '.join(tied)}: within noise of each other (95% CIs overlap)"
    candidates, references = [r for r in rows if r.method != limit], [r for r in rows if r.method == limit]
    columns: dict[str, list[str]] = {"method": [f"{r.method}*" if r.method == limit else r.method
                                                for r in candidates + references]}
    if strategies:
        columns["strategy"] = [r.strategy or "-" for r in candidates + references]
    columns[f"val {primary.heading}"] = [primary.cell(r.best_val) for r in candidates + references]
    for m in shown:
        columns[f"test {m.heading} ± CI"] = [m.cell_ci(r.test_mean(m.name), r.test_ci(m.name))
                                                 for r in candidates + references]
    if any(r.test.get(f"test_{primary.name}_seed_sd") is not None for r in rows):  # budget.seeds: the spread
        columns["seed sd"] = [primary.cell(r.test.get(f"test_{primary.name}_seed_sd")) for r in candidates + references]
    if any(r.test.get("test_adapt_ms") is not None for r in rows):  # what adapting to one task costs, median
        columns["adapt ms"] = [_ms(r.test.get("test_adapt_ms")) for r in candidates + references]
    columns["trials"] = [f"{r.complete}/{r.pruned}/{r.failed}" for r in candidates + references]
    columns["run"] = [(r.run_id or "-")[:8] for r in candidates + references]
    console = _console()
    while _width(columns) > console.width:  # what gives way: secondary scores, then the strategy, then the run
        dropped = next((c for c in reversed(list(columns)) if c.startswith("test ") and c != f"test {primary.heading}"
                        " ± CI"), next((c for c in ("strategy", "run", "adapt ms") if c in columns), None))
        if dropped is None:
            break
        del columns[dropped]
        caption += f"; {dropped.removesuffix(' ± CI')} left out to fit {console.width} columns (MLflow has it)"
    if "seed sd" in columns:
        caption += "; test: the mean over the training seeds; seed sd: the spread of their means"
    if "adapt ms" in columns:
        caption += "; adapt ms: adapting to one new task and predicting its queries (median)"
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for column in columns:
        table.add_column(column, justify="left" if column in {"method", "strategy", "run"} else "right", no_wrap=True)
    for i, cells in enumerate(zip(*columns.values())):
        table.add_row(*cells, end_section=bool(references) and i == len(candidates) - 1)  # a rule above the limit
    console.print(table)


def _ms(value: float | None) -> str:
    """Milliseconds for a table: ``0.42``, ``14``, ``1,250``; ``-`` when not measured."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.2f}" if value < 1 else f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _width(columns: dict[str, list[str]]) -> int:
    """The width rich draws ``columns`` in, headings unwrapped: each column's widest line plus its padding and rule."""
    return 1 + sum(3 + max(len(part) for text in [name, *cells] for part in text.split("\n"))
                   for name, cells in columns.items())


def _within_noise(rows: list[MethodRow], metric: Metric) -> list[str]:
    """The methods whose test interval overlaps the best one's (by ``metric``), the best first; one alone: none."""
    scored = [r for r in rows if r.test_mean(metric.name) is not None]
    if not scored:
        return []
    best = max(scored, key=lambda r: r.test_mean(metric.name) * (1 if metric.higher_is_better else -1))

    def interval(row: MethodRow) -> tuple[float, float]:
        mean, ci = row.test_mean(metric.name), row.test_ci(metric.name) or 0.0
        return mean - ci, mean + ci

    low, high = interval(best)
    return [best.method] + [r.method for r in scored if r is not best and interval(r)[0] <= high
                            and interval(r)[1] >= low]


def render_selection(selection: Any, *, dry_run: bool) -> None:
    """Print ``metaopt select``'s finalists on their common test tasks, and what happened to the champion."""
    from rich.table import Table

    decision = selection.decision
    metric, metrics = decision.metric, selection.metrics
    table = Table(title=f"{selection.key}: finalists on {selection.test_tasks} test tasks (the same for all)")
    for column in ["method", "run", *(f"test {m.heading} ± 95% CI" for m in metrics), ""]:
        table.add_column(column, justify="left" if column in {"method", "run", ""} else "right")
    champion_id = decision.champion.run_id if decision.champion else None
    best_id = decision.best.run_id if decision.best else None
    pool = sorted(selection.candidates, key=lambda c: c.mean(metric), reverse=metric.higher_is_better)
    for c in pool:
        marks = ", ".join(m for m, on in (("champion", c.run_id == champion_id), ("best", c.run_id == best_id)) if on)
        cells = [c.method, (c.run_id or "-")[:8]]
        cells += [m.cell_ci(*c.scores.mean_ci(m.name)) if m.name in c.scores.per_task else "-" for m in metrics]
        table.add_row(*cells, marks)
    _console().print(table)
    if selection.rescored:
        print(f"scored here (no recorded test scores on enough tasks): {', '.join(r[:8] for r in selection.rescored)}")
    if decision.moved:
        did = "would move" if dry_run else f"moved to version {selection.version}"
        print(f"champion {did}: {decision.best.method} ({decision.reason})")
    else:
        print(f"champion unchanged: {decision.reason}")


def print_summary(summary: SearchSummary, tracker: Any) -> None:
    """A finished search: its leaderboard, the champion decision, the verdict, notes, and where to browse it."""
    from metaopt.tracking.store import registered_model_name, run_link, ui_base

    render_leaderboard(summary.rows, f"{summary.key}: search {summary.search_id} ({summary.seconds:.0f}s)",
                       summary.metrics, limit=summary.limit)
    if summary.pareto:
        from metaopt.search.trial import ADAPT_MS

        print(f"Pareto front (validation {summary.metric.label} against ms to adapt to a validation task), "
              f"{len(summary.pareto)} trials:")
        for r in summary.pareto:
            print(f"  {f'{r.method}-{r.number}':<24}{summary.metric.show(r.value):>10}  {_ms(r.extra[ADAPT_MS]):>7} ms")
    decision = summary.decision
    where = f"models:/{registered_model_name(summary.key)}@champion"
    if decision is not None and decision.moved:
        print(f"champion: {decision.best.method} -> {where} (version {summary.champion_version}; {decision.reason})")
    elif decision is not None:
        print(f"champion unchanged at {where}: {decision.reason}")
    if summary.verdict:
        print(f"verdict: {summary.verdict}")
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"tracking: {tracker.tracking_uri}")
    if tracker.experiment_id and summary.parent_run_id:
        served = "" if tracker.tracking_uri.startswith("http") else "  (after `metaopt ui`)"
        print(f"search run: {run_link(ui_base(tracker.tracking_uri), tracker.experiment_id, summary.parent_run_id)}"
              f"{served}")


class SearchProgress:
    """Terminal progress of a search: a bar with trials done, best so far, ETA; a line per trial."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("trials"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[best]}"),
        )
        self.task = None
        self.objective = "val_loss"
        self.metric: Metric | None = None

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        console = self.bar.console
        if event == "start":
            self.objective = info.get("objective", "val_loss")
            self.metric = info.get("metric")
            console.print(f"search [bold]{info['search_id']}[/] of [bold]{info.get('key', '?')}[/] "
                          f"(MLflow parent run {info['parent_run_id']}; objective {self.objective})")
            self.bar.start()
            self.task = self.bar.add_task("searching", total=info["trials"], completed=info.get("done", 0), best="")
        elif event == "trial":
            r = info["result"]
            reason = f" — {r.reason}" if r.reason and r.state != "pruned" else ""
            line = (f"  trial {r.number:>3} {r.method:<8} {r.state:<8} {self.objective}={self._show(r.value)} "
                    f"({r.seconds:.1f}s){reason}")
            console.print(line, soft_wrap=True, highlight=False)
            best = info["best"]
            self.bar.update(self.task, advance=1, best=f"best {self._show(best.value)} ({best.method})" if best else "")
        elif event == "testing":
            self.bar.stop()
            console.print(f"scoring the best trial of {', '.join(info['methods'])} on held-out test tasks ...")
        elif event == "warning":
            console.print(f"[yellow]warning:[/] {info['message']}")
        elif event == "end":
            self.bar.stop()

    def _show(self, value: float | None) -> str:
        if self.metric is not None:
            return self.metric.show(value)
        return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"

    def stopping(self) -> None:
        """A signal asked the search to stop: say so at once."""
        self.bar.stop()
        self.bar.console.print("stopping: cancelling the running trials (again: stop at once) ...", highlight=False)
