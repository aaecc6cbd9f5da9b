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

    # Logs and pipes get a 120-column table instead of rich's 80-column default.
    return Console(width=None if sys.stdout.isatty() else 120)


def render_leaderboard(rows: list[MethodRow], title: str, metrics: tuple[Metric, ...] | None = None,
                       limit: str | None = None) -> None:
    """Print method rows as a table: the best validation score, the test mean ± 95% CI of each metric, trial counts.

    ``metrics``: the family's, the primary one first (what the validation column shows); default: MSE.
    ``limit``: the method that is the family's exact limit, labelled so.
    """
    from rich.table import Table

    metrics = metrics or REGRESSION
    primary = metrics[0]
    shown = [m for m in metrics if any(row.test_mean(m.name) is not None for row in rows)] or [primary]
    table = Table(title=title, caption="done/pruned/failed: trials by outcome")
    strategies = any(row.strategy for row in rows)
    columns = ["method", *(["strategy"] if strategies else []), f"val {primary.heading}",
               *(f"test {m.heading} ± 95% CI" for m in shown), "done", "pruned", "failed", "run"]
    for column in columns:
        table.add_column(column, justify="left" if column in {"method", "strategy", "run"} else "right")
    for row in rows:
        name = f"{row.method} (exact limit)" if row.method == limit else row.method
        cells = [name, *([row.strategy or "-"] if strategies else []), primary.cell(row.best_val)]
        cells += [m.cell_ci(row.test_mean(m.name), row.test_ci(m.name)) for m in shown]
        cells += [str(row.complete), str(row.pruned), str(row.failed), (row.run_id or "-")[:8]]
        table.add_row(*cells)
    _console().print(table)


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
