"""The ``metaopt`` command: search, resume, leaderboard, select, ui, families, methods, init.

Results are kept per key: a task family and the options that change its tasks
(``sine-10shot``, ``glyphs-5w1s-q5``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any


EXIT_USAGE = 2  # the input: a job, a flag, a value
EXIT_FAULT = 1  # the environment: a damaged store, a full disk


def _code(exc: BaseException) -> int:
    """The exit code of a one-line error: 1 where the environment broke, 2 where the input is wrong."""
    from metaopt.preflight import Fault
    from metaopt.search.launch import EnvironmentFault

    return EXIT_FAULT if isinstance(exc, Fault | EnvironmentFault) else EXIT_USAGE


def cmd_search(args: argparse.Namespace) -> int:
    """Run a search from a job file."""
    from metaopt.search import ConfigError, load_job

    from metaopt.search.study import check_search_id

    try:
        loaded = load_job(args.job)
        if args.search_id is not None:
            check_search_id(args.search_id)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _launched(args, loaded, resume=False)


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a search whose driver was stopped or lost."""
    from metaopt.search import ConfigError
    from metaopt.search.study import recorded_job

    from metaopt.search.study import check_search_id

    try:
        check_search_id(args.search_id)
        _launch(args).check(resuming=True)
        loaded = recorded_job(args.search_id, workdir=args.workdir, storage=args.storage)
    except (ConfigError, LookupError, ValueError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return _code(exc)
    return _launched(args, loaded, resume=True)


def _launch(args: argparse.Namespace) -> Any:
    from metaopt.search.launch import Launch

    return Launch(tracking_uri=args.tracking_uri, storage=args.storage, address=args.address,
                  in_process=args.in_process, workdir=args.workdir)


def _launched(args: argparse.Namespace, loaded: Any, *, resume: bool) -> int:
    """Check, then run the search with SIGINT / SIGTERM asking it to stop; print the outcome; the exit code.

    The first signal: the running trials are cancelled and recorded, and one line says how to
    go on (exit 130 for SIGINT, 143 for SIGTERM); a second one ends the process at once.
    """
    from metaopt.console import SearchProgress, print_summary
    from metaopt.search import ConfigError
    from metaopt.search.interruption import EXIT_CODES, StopRequest, handle_signals
    from metaopt.search.runner import JoinError, SearchInterrupted
    from metaopt.tracking import MlflowSearchTracker

    launch = _launch(args)
    try:
        if not resume:  # the data, once, before any trial: its problems are one line, what it left out is said once
            for warning in launch.check(loaded):
                print(f"warning: {warning}", file=sys.stderr)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return _code(exc)
    tracker = MlflowSearchTracker(args.tracking_uri)
    progress = SearchProgress()
    try:
        summary = launch.start(loaded, tracker=tracker, progress=progress, resume=resume,
                               search_id=args.search_id,
                               stopping=lambda: handle_signals(StopRequest(), lambda signum: progress.stopping()))
    except SearchInterrupted as exc:
        progress.bar.stop()
        print(str(exc), file=sys.stderr)
        return EXIT_CODES.get(exc.signum, 128 + exc.signum)
    except JoinError as exc:  # joining a search of another job
        progress.bar.stop()
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    print_summary(summary, tracker)
    return _every_trial_failed(summary)


def _every_trial_failed(summary: Any) -> int:
    """Exit 1 with one line when trials ran and none finished (a search that learned nothing must not exit 0)."""
    ran = [r for r in summary.results if r.state != "pruned"]
    if ran and all(r.state == "failed" for r in ran):
        reason = (ran[0].reason or "no reason recorded").strip().splitlines()[0][:200]
        print(f"error: every trial failed ({len(ran)}); the first: {reason}", file=sys.stderr)
        return 1
    return 0


def _store(uri: str | None) -> Exception | None:
    """Why a reading command has no store to read (it never creates one): a ``Problem`` whose ``str()`` is one
    line (a ``Fault`` where the store is damaged); None when it has one."""
    from metaopt.preflight import Problem
    from metaopt.tracking.store import check_tracking_uri

    try:
        check_tracking_uri(uri, create=False)
    except Problem as exc:
        return exc
    return None


def cmd_select(args: argparse.Namespace) -> int:
    """Each method's best trial of a key and its champion on the same test tasks; move the champion if beaten."""
    from metaopt.console import render_selection
    from metaopt.tracking.champion import select_champion

    if (problem := _store(args.tracking_uri)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return _code(problem)
    try:
        selection = select_champion(args.key, tracking_uri=args.tracking_uri, test_tasks=args.test_tasks,
                                    apply=not args.dry_run, max_adapt_ms=args.max_adapt_ms)
    except LookupError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    render_selection(selection, dry_run=args.dry_run)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Print each method's best trial of a key (or of every key of a family), mean and 95% CI on test tasks."""
    from metaopt.console import render_leaderboard
    from metaopt.tracking import leaderboards

    if (problem := _store(args.tracking_uri)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return _code(problem)
    try:
        boards = leaderboards(args.key, tracking_uri=args.tracking_uri, search_id=args.search)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for board in boards:
        legacy = " (legacy: one experiment per family, settings mixed)" if board.legacy else ""
        title = f"{board.key}{legacy}: ranked by validation {board.metric.label}, scored on test tasks"
        render_leaderboard(board.rows, title, board.metrics, limit=board.limit)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the MLflow UI on 127.0.0.1 against the same store, for as long as this command runs."""
    import signal

    from metaopt.tracking import resolve_tracking_uri

    if (problem := _store(args.tracking_uri)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return _code(problem)
    if (taken := _port_taken(args.host, args.port)) is not None:
        print(f"error: --port {args.port}: {args.host}:{args.port} is taken ({taken}); another `metaopt ui` or "
              f"MLflow server? Pick another with --port", file=sys.stderr)
        return EXIT_FAULT
    uri = resolve_tracking_uri(args.tracking_uri)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
               "--port", str(args.port), "--workers", "1"]
    # The server in a process group of its own, stopped with this command however it ends (Ctrl-C, SIGTERM, SIGHUP):
    # a `metaopt ui` that is gone never leaves a server holding the port.
    server = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=None if args.verbose else subprocess.DEVNULL)
    stop = lambda signum, frame: sys.exit(128 + signum)  # noqa: E731 - unwinds to the finally below
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    base = f"http://{args.host}:{args.port}"
    try:
        if not _answers(server, f"{base}/health", timeout=120):
            print(f"error: the MLflow UI server did not come up on {args.host}:{args.port} (it exited with "
                  f"{server.returncode}; -v shows its output)", file=sys.stderr)
            return EXIT_FAULT
        print(f"MLflow UI on {base}/#/experiments?workflowType=machine_learning (store {uri}); Ctrl-C stops it")
        _print_experiment_links(uri, base)
        sys.stdout.flush()
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(server, lambda: _port_taken(args.host, args.port) is None)


def _port_taken(host: str, port: int) -> str | None:
    """Why nothing can listen on ``host:port`` now (in use, not an address here); None when it is free."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # as servers bind: a closed connection's TIME_WAIT on the port (60 s after a server stops) is no listener
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _answers(server: subprocess.Popen, url: str, timeout: float) -> bool:
    """Whether ``url`` answers before ``timeout`` seconds pass, or ``server`` exits."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while server.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def _stop_group(process: subprocess.Popen, released: Callable[[], bool] | None = None) -> None:
    """SIGTERM to ``process``'s group, SIGKILL after 10 s; with ``released``, done only once it holds too (the
    server's port free: a worker of the group can outlive its leader for a while)."""
    import signal
    import time

    for signum, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        deadline = time.monotonic() + wait
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        while released is not None and not released() and time.monotonic() < deadline:
            time.sleep(0.2)
        if released is None or released():
            break
    process.poll()


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


def _family_options(items: list[str], command: str) -> dict[str, Any]:
    """A family's ``NAME=VALUE`` options from the command line, values read as YAML (``ways=5``, ``standardize=false``);
    ``ValueError`` (one line) for an item that is not one."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{command}: option {item!r}: expected NAME=VALUE, e.g. shots=20")
        options[name] = yaml.safe_load(value) if value else value
    return options


def cmd_init(args: argparse.Namespace) -> int:
    """Write a starter job and search space for a family."""
    from metaopt.discovery import write_starter
    from metaopt.plugins import PluginError

    try:
        options = _family_options(args.options, "init")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        job_path, space_path = write_starter(args.family, options, Path(args.out), args.name, force=args.force,
                                             trials=args.trials, meta_iterations=args.meta_iterations)
    except (ValueError, FileNotFoundError, FileExistsError, PluginError) as exc:
        print(f"error: init: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {job_path} and {space_path}; run: metaopt search {job_path}")
    return 0


def cmd_advise(args: argparse.Namespace) -> int:
    """Before any trial: the methods and configurations the store's history recommends for a key, and whence."""
    from mlflow.tracking import MlflowClient
    from pydantic import ValidationError

    from metaopt.search.config import FamilySpec
    from metaopt.tracking import resolve_tracking_uri
    from metaopt.tracking.board import settings
    from metaopt.tracking.history import KIND_TAG, last_search, sources
    from metaopt.tracking.store import key_experiments

    if (problem := _store(args.tracking_uri)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return _code(problem)
    client = MlflowClient(resolve_tracking_uri(args.tracking_uri))
    if args.family:  # a key that may have no search yet, named by its family and options
        try:
            spec = FamilySpec.model_validate({"name": args.family[0], **_family_options(args.family[1:], "advise")})
        except ValidationError as exc:
            first = exc.errors()[0]
            print(f"error: advise: {'.'.join(map(str, first['loc']))}: {first['msg']}", file=sys.stderr)
            return EXIT_USAGE
        except ValueError as exc:  # an option that is not NAME=VALUE
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        family, kind, asked, key = spec.name, spec.build_kind(), spec.options.model_dump(), spec.key
    else:
        known = [e for e in key_experiments(client, args.key) if not e.legacy and e.key == args.key]
        parent = last_search(client, known[0].experiment_id) if known else None
        if parent is None:
            print(f"error: advise: no key {args.key!r} in {client.tracking_uri}: name a new one with --family NAME "
                  "OPTION=VALUE ...", file=sys.stderr)
            return EXIT_USAGE
        family, key = known[0].family, args.key
        kind = parent.data.tags.get(KIND_TAG, "")
        asked = {k.removeprefix("family."): v for k, v in parent.data.params.items() if k.startswith("family.")}
    found = [s for s in sources(client, family, kind, asked, per_method=1) if s.key != key or not args.family]
    if not found:
        print(f"no history: {client.tracking_uri} has no finished search of a {family} family with {kind} tasks")
        return 0
    print(f"{key} ({family}, {kind} tasks): what {len(found)} key(s) of {client.tracking_uri} found best, nearest "
          "first (validation scores on their own key)")
    for source in found:
        print(f"  {source.key}  distance {source.distance:.2g}")
        for config in source.configs:
            print(f"    {config.method:<10} val {source.metric} {config.val:.4g}  "
                  f"{settings({'method': config.method, **config.hparams})}")
    print("start from them: `warm_start: auto` in the job (or a list of keys)")
    return 0


def _parser_with(parent: argparse.ArgumentParser) -> type[argparse.ArgumentParser]:
    """An ``ArgumentParser`` class whose instances (the commands) also take ``parent``'s options."""

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, parents=[parent], **kwargs)

    return Parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``metaopt``."""
    parser = argparse.ArgumentParser(prog="metaopt", description=__doc__)
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show Ray's, MLflow's and the UI server's own output (quiet by default)")
    verbose = argparse.ArgumentParser(add_help=False)  # -v after the command too (metaopt search job.yaml -v)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_parser_with(verbose))

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
    select.add_argument("--max-adapt-ms", type=float, metavar="MS",
                        help="only methods that adapt to a new task within MS milliseconds (recorded median)")
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

    advise = sub.add_parser("advise", help="before any trial: what the store's past searches recommend for a key")
    advise.add_argument("key", help="a key of the store (sine-10shot), or a new key's name with --family")
    advise.add_argument("--family", nargs="+", metavar="NAME [OPTION=VALUE",
                        help="a new key: its family (see `metaopt families`) and options, e.g. --family sine shots=20")
    advise.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    advise.set_defaults(func=cmd_advise)

    ui = sub.add_parser("ui", help="MLflow UI on 127.0.0.1 against the same store")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``metaopt`` command."""
    from metaopt.environment import VERBOSE, quiet_libraries, quiet_mlflow

    quiet_mlflow()
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        os.environ[VERBOSE] = "1"
    if args.command in ("search", "resume"):
        quiet_libraries()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
