"""The ``metaopt`` command: search, resume, leaderboard, select, ui, families, methods, init.

Results are kept per key: a task family and the options that change its tasks
(``sine-10shot``, ``glyphs-5w1s-q5``).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

EXIT_USAGE = 2


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _score(mean: float | None, ci: float | None, metric: Any) -> str:
    """``mean ± ci``, accuracies in percent."""
    if mean is None:
        return "-"
    scale, digits = (100.0, 2) if metric.name == "accuracy" else (1.0, 4)
    return f"{_fmt(scale * mean, digits)} ± {_fmt(scale * (ci or 0.0), digits)}"


def _label(metric: Any) -> str:
    return f"{metric.label} %" if metric.name == "accuracy" else metric.label


def render_leaderboard(rows: list[Any], title: str, metrics: tuple[Any, ...] | None = None) -> None:
    """Print method rows as a table: the best validation score, the test mean ± 95% CI of each metric, trial counts.

    ``metrics``: the family's, the primary one first (what the validation column shows); default: MSE.
    """
    from rich.console import Console
    from rich.table import Table

    from metaopt.tasks.metrics import REGRESSION

    metrics = metrics or REGRESSION
    primary = metrics[0]
    shown = [m for m in metrics if any(row.test_mean(m.name) is not None for row in rows)] or [primary]
    table = Table(title=title, caption="done/pruned/failed: trials by outcome")
    strategies = any(row.strategy for row in rows)
    columns = ["method", *(["strategy"] if strategies else []), f"val {_label(primary)}",
               *(f"test {_label(m)} ± 95% CI" for m in shown), "done", "pruned", "failed", "run"]
    for column in columns:
        table.add_column(column, justify="left" if column in {"method", "strategy", "run"} else "right")
    percent = primary.name == "accuracy"
    for row in rows:
        val = None if row.best_val is None else (100 * row.best_val if percent else row.best_val)
        cells = [row.method, *([row.strategy or "-"] if strategies else []), _fmt(val, 2 if percent else 4)]
        cells += [_score(row.test_mean(m.name), row.test_ci(m.name), m) for m in shown]
        cells += [str(row.complete), str(row.pruned), str(row.failed), (row.run_id or "-")[:8]]
        table.add_row(*cells)
    # Logs and pipes get a 120-column table instead of rich's 80-column default.
    Console(width=None if sys.stdout.isatty() else 120).print(table)


class _SearchProgress:
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

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        console = self.bar.console
        if event == "start":
            self.objective = info.get("objective", "val_loss")
            console.print(f"search [bold]{info['search_id']}[/] of [bold]{info.get('key', '?')}[/] "
                          f"(MLflow parent run {info['parent_run_id']}; objective {self.objective})")
            self.bar.start()
            self.task = self.bar.add_task("searching", total=info["trials"], completed=info.get("done", 0), best="")
        elif event == "trial":
            r = info["result"]
            value = _fmt(r.value)
            reason = f" — {r.reason}" if r.reason and r.state != "pruned" else ""
            line = f"  trial {r.number:>3} {r.method:<8} {r.state:<8} {self.objective}={value} ({r.seconds:.1f}s){reason}"
            console.print(line, soft_wrap=True, highlight=False)
            best = info["best"]
            self.bar.update(self.task, advance=1, best=f"best {best.value:.4f} ({best.method})" if best else "")
        elif event == "testing":
            self.bar.stop()
            console.print(f"scoring the best trial of {', '.join(info['methods'])} on held-out test tasks ...")
        elif event == "warning":
            console.print(f"[yellow]warning:[/] {info['message']}")
        elif event == "end":
            self.bar.stop()

    def stopping(self) -> None:
        """A signal asked the search to stop: say so at once."""
        self.bar.stop()
        self.bar.console.print("stopping: cancelling the running trials (again: stop at once) ...", highlight=False)


def cmd_search(args: argparse.Namespace) -> int:
    """Run a search from a job file."""
    from metaopt.search import ConfigError, load_job

    from metaopt.search.launch import check_family

    try:
        loaded = load_job(args.job)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    from metaopt.search.runner import run_search
    from metaopt.tracking import MlflowSearchTracker

    if (problem := _preflight(args, workdir_exists=False)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:  # the data, once, before any trial: its problems are one line, what it left out is said once
        for warning in check_family(loaded):
            print(f"warning: {warning}", file=sys.stderr)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    tracker = MlflowSearchTracker(args.tracking_uri)
    progress = _SearchProgress()
    return _interruptible(args, loaded.job, progress, tracker, lambda executor, stop: run_search(
        loaded, executor=executor, tracker=tracker, workdir=args.workdir, storage=args.storage, progress=progress,
        stop=stop, search_id=args.search_id))


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a search whose driver was stopped or lost."""
    from metaopt.search.runner import recorded_job, resume_search
    from metaopt.tracking import MlflowSearchTracker

    if (problem := _preflight(args, workdir_exists=True)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        loaded = recorded_job(args.search_id, workdir=args.workdir, storage=args.storage)
    except LookupError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    tracker = MlflowSearchTracker(args.tracking_uri)
    progress = _SearchProgress()
    return _interruptible(args, loaded.job, progress, tracker, lambda executor, stop: resume_search(
        args.search_id, executor=executor, tracker=tracker, workdir=args.workdir, storage=args.storage,
        progress=progress, stop=stop))


def _interruptible(args: argparse.Namespace, job: Any, progress: _SearchProgress, tracker: Any, search: Any) -> int:
    """Run ``search(executor, stop)`` with SIGINT / SIGTERM asking it to stop; print the outcome; the exit code.

    The first signal: the running trials are cancelled and recorded, and one line says how to
    go on (exit 130 for SIGINT, 143 for SIGTERM); a second one ends the process at once.
    """
    from metaopt.search.interruption import EXIT_CODES, StopRequest, handle_signals
    from metaopt.search.runner import JoinError, SearchInterrupted

    def first(signum: int) -> None:
        progress.stopping()

    try:
        # Signals are handled from here: Ray's core installs handlers of its own when it starts.
        with _executor(args, job) as executor, handle_signals(StopRequest(), first) as stop:
            summary = search(executor, stop)
    except SearchInterrupted as exc:
        progress.bar.stop()
        print(str(exc), file=sys.stderr)
        return EXIT_CODES.get(exc.signum, 128 + exc.signum)
    except JoinError as exc:  # joining a search of another job
        progress.bar.stop()
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    _print_summary(summary, tracker)
    return 0


def _preflight(args: argparse.Namespace, *, workdir_exists: bool) -> str | None:
    """Why the search cannot start, in one line (None when every address, URI and folder answers)."""
    from metaopt.search.launch import preflight

    return preflight(tracking_uri=args.tracking_uri, storage=args.storage, address=args.address,
                     in_process=args.in_process, workdir=args.workdir, workdir_exists=workdir_exists)


def _store(uri: str | None) -> str | None:
    """Why a reading command has no store to read (it never creates one), in one line; None when it has."""
    from metaopt.preflight import Problem
    from metaopt.tracking.store import check_tracking_uri

    try:
        check_tracking_uri(uri, create=False)
    except Problem as exc:
        return str(exc)
    return None


def _executor(args: argparse.Namespace, job: Any) -> Any:
    from metaopt.search.launch import make_executor

    return make_executor(job, in_process=args.in_process, address=args.address)


def _print_summary(summary: Any, tracker: Any) -> None:
    from metaopt.tracking.store import registered_model_name

    render_leaderboard(summary.rows, f"{summary.key}: search {summary.search_id} ({summary.seconds:.0f}s)",
                       summary.metrics)
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
    from metaopt.tracking.store import run_link, ui_base

    print(f"tracking: {tracker.tracking_uri}")
    if tracker.experiment_id and summary.parent_run_id:
        served = "" if tracker.tracking_uri.startswith("http") else "  (after `metaopt ui`)"
        print(f"search run: {run_link(ui_base(tracker.tracking_uri), tracker.experiment_id, summary.parent_run_id)}"
              f"{served}")


def cmd_select(args: argparse.Namespace) -> int:
    """Each method's best trial of a key and its champion on the same test tasks; move the champion if beaten."""
    from rich.console import Console
    from rich.table import Table

    from metaopt.tracking.champion import select_champion

    if (problem := _store(args.tracking_uri)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        selection = select_champion(args.key, tracking_uri=args.tracking_uri, test_tasks=args.test_tasks,
                                    apply=not args.dry_run)
    except LookupError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    decision = selection.decision
    metric = decision.metric
    table = Table(title=f"{selection.key}: finalists on {selection.test_tasks} test tasks (the same for all)")
    metrics = selection.metrics
    for column in ["method", "run", *(f"test {_label(m)} ± 95% CI" for m in metrics), ""]:
        table.add_column(column, justify="left" if column in {"method", "run", ""} else "right")
    champion_id = decision.champion.run_id if decision.champion else None
    best_id = decision.best.run_id if decision.best else None
    pool = sorted(selection.candidates, key=lambda c: c.mean(metric), reverse=metric.higher_is_better)
    for c in pool:
        marks = ", ".join(m for m, on in (("champion", c.run_id == champion_id), ("best", c.run_id == best_id)) if on)
        cells = [c.method, (c.run_id or "-")[:8]]
        for m in metrics:
            cells.append(_score(*c.scores.mean_ci(m.name), m) if m.name in c.scores.per_task else "-")
        table.add_row(*cells, marks)
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    if selection.rescored:
        print(f"scored here (no recorded test scores on enough tasks): {', '.join(r[:8] for r in selection.rescored)}")
    if decision.moved:
        did = "would move" if args.dry_run else f"moved to version {selection.version}"
        print(f"champion {did}: {decision.best.method} ({decision.reason})")
    else:
        print(f"champion unchanged: {decision.reason}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Print each method's best trial of a key (or of every key of a family), mean and 95% CI on test tasks."""
    from metaopt.tracking import leaderboards

    if (problem := _store(args.tracking_uri)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        boards = leaderboards(args.key, tracking_uri=args.tracking_uri, search_id=args.search)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for board in boards:
        legacy = " (legacy: one experiment per family, settings mixed)" if board.legacy else ""
        title = f"{board.key}{legacy}: test tasks only; selection by validation {board.metric.label}"
        render_leaderboard(board.rows, title, board.metrics)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the MLflow UI on 127.0.0.1 against the same store."""
    from metaopt.tracking import resolve_tracking_uri

    if (problem := _store(args.tracking_uri)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    uri = resolve_tracking_uri(args.tracking_uri)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
               "--port", str(args.port), "--workers", "1"]
    print(f"MLflow UI on http://{args.host}:{args.port} (store {uri}); Ctrl-C stops it")
    _print_experiment_links(uri, f"http://{args.host}:{args.port}")
    sys.stdout.flush()  # before the server's own output
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0


def _print_experiment_links(uri: str, base: str) -> None:
    """A link per key of the store: its runs table in MLflow's model-training view, with metaopt's columns."""
    from mlflow.tracking import MlflowClient

    from metaopt.tracking.store import experiment_link

    experiments = MlflowClient(uri).search_experiments(filter_string="tags.`metaopt.key` != ''",
                                                       order_by=["last_update_time DESC"], max_results=20)
    for experiment in experiments:
        print(f"  {experiment.tags['metaopt.key']}: {experiment_link(base, experiment.experiment_id)}")


def _version() -> str:
    """``metaopt X (torch X, optuna X, ray X, mlflow X)``, without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    import metaopt

    parts = []
    for package in ("torch", "optuna", "ray", "mlflow"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} missing")
    return f"metaopt {metaopt.__version__} ({', '.join(parts)})"


def cmd_families(args: argparse.Namespace) -> int:
    """The task families a job may name, plugins included, with their options and metrics."""
    from metaopt.discovery import describe_families

    return _described(*describe_families())


def cmd_methods(args: argparse.Namespace) -> int:
    """The methods a job may search, plugins included, with their hyperparameters."""
    from metaopt.discovery import describe_methods

    return _described(*describe_methods())


def _described(lines: list[str], broken: list[str]) -> int:
    print("\n".join(lines))
    for line in broken:
        print(f"error: {line}", file=sys.stderr)
    return 1 if broken else 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write a starter job and search space for a family."""
    import yaml

    from metaopt.discovery import write_starter
    from metaopt.plugins import PluginError

    options = {}
    for item in args.options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"error: init: option {item!r}: expected NAME=VALUE, e.g. root=photos", file=sys.stderr)
            return EXIT_USAGE
        options[key] = yaml.safe_load(value) if value else value
    try:
        job_path, space_path = write_starter(args.family, options, Path(args.out), args.name, force=args.force,
                                             trials=args.trials, meta_iterations=args.meta_iterations)
    except (ValueError, FileNotFoundError, FileExistsError, PluginError) as exc:
        print(f"error: init: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {job_path} and {space_path}; run: metaopt search {job_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``metaopt``."""
    parser = argparse.ArgumentParser(prog="metaopt", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)

    search = sub.add_parser("search", help="run the search a job file describes")
    search.add_argument("job", help="job YAML file, e.g. jobs/quickstart.yaml")
    search.add_argument("--address", help="Ray cluster address (ray://host:10001 or host:6379); default: local Ray")
    search.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    search.add_argument("--workdir", default=".metaopt", help="Optuna journal and checkpoints (default: .metaopt)")
    search.add_argument("--storage", help="Optuna database URL every node reaches, e.g. postgresql://user:pw@db/optuna "
                        "(default: a journal file in --workdir)")
    search.add_argument("--in-process", action="store_true", help="run trials in this process, without Ray")
    search.add_argument("--search-id", help="start the search under this id, or join it if --storage already holds it "
                        "(several drivers with one id share its trials)")
    search.set_defaults(func=cmd_search)

    resume = sub.add_parser("resume", help="continue a search whose driver was stopped or lost")
    resume.add_argument("search_id", help="the search id the search printed, e.g. quickstart-20261126-101500-ab12")
    resume.add_argument("--address", help="Ray cluster address (default: local Ray)")
    resume.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    resume.add_argument("--workdir", default=".metaopt", help="where the search's Optuna journal is (default: .metaopt)")
    resume.add_argument("--storage", help="the Optuna database URL the search used (default: --workdir's journal)")
    resume.add_argument("--in-process", action="store_true", help="run trials in this process, without Ray")
    resume.set_defaults(func=cmd_resume)

    board = sub.add_parser("leaderboard", help="best method per key, test mean and 95%% CI")
    board.add_argument("key", help="a key (sine-10shot, glyphs-5w1s-q5), or a family name for one table per key")
    board.add_argument("--search", help="only this search id")
    board.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    board.set_defaults(func=cmd_leaderboard)

    select = sub.add_parser("select", help="re-score the finalists and move the champion alias if beaten beyond its CI")
    select.add_argument("key", help="a key, e.g. sine-10shot (or a family name that has one key)")
    select.add_argument("--test-tasks", type=int,
                        help="how many test tasks (default: the most any finalist was scored on)")
    select.add_argument("--dry-run", action="store_true", help="say what would happen, move nothing")
    select.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    select.set_defaults(func=cmd_select)

    families = sub.add_parser("families", help="the task families a job may name (plugins included), their options")
    families.set_defaults(func=cmd_families)
    methods = sub.add_parser("methods", help="the methods a job may search (plugins included), their hyperparameters")
    methods.set_defaults(func=cmd_methods)
    init = sub.add_parser("init", help="write a starter job and search space for a family")
    init.add_argument("--family", required=True, help="a family name (see `metaopt families`)")
    init.add_argument("options", nargs="*", metavar="NAME=VALUE", help="the family's options, e.g. root=photos ways=5")
    init.add_argument("--name", help="the job's name and file name (default: the family's)")
    init.add_argument("--out", default=".", help="folder to write the two files into (default: here)")
    init.add_argument("--force", action="store_true", help="overwrite files that exist")
    init.add_argument("--trials", type=int, help="the budget's trials (default 12, plus one per baseline)")
    init.add_argument("--meta-iterations", type=int,
                      help="meta-iterations per trial (default 400 on RL families, else 1000)")
    init.set_defaults(func=cmd_init)

    ui = sub.add_parser("ui", help="MLflow UI on 127.0.0.1 against the same store")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metaopt`` command."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
