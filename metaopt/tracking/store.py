"""Where MLflow records go (the embedded sqlite store by default), and how they are named: one experiment per key.

A key is a family and the options that change its tasks (``sine-10shot``,
``glyphs-5w1s-q5``). Its experiment and its registered model are both
``metaopt-<key>``; the experiment's tags say which family and primary metric it holds.
Stores written before keys have one experiment per family (``metaopt-<family>``, no
``metaopt.key`` tag): they stay readable as a *legacy* key named like the family.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metaopt.tasks import FAMILIES
from metaopt.tasks.metrics import Metric, mse


DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
PREFIX = "metaopt-"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db`` (absolute, so Ray workers agree).

    Every use of a store resolves it first: MLflow is quieted here (``environment.quiet_mlflow``).
    """
    from metaopt.environment import quiet_mlflow

    quiet_mlflow()
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path(DEFAULT_DB).resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def default_artifact_root(tracking_uri: str) -> str | None:
    """``./mlartifacts`` beside a local sqlite store; the server decides for remote stores."""
    if tracking_uri.startswith("sqlite:"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        return (db.parent / DEFAULT_ARTIFACTS).resolve().as_uri()
    return None


def experiment_name(key: str) -> str:
    """One MLflow experiment per key."""
    return f"{PREFIX}{key}"


def registered_model_name(key: str) -> str:
    """The registered model that holds a key's champions."""
    return f"{PREFIX}{key}"


def get_or_create_experiment(client: Any, key: str, family: str | None = None, metric: Metric | None = None,
                             limit: str | None = None) -> str:
    """The key's experiment id, created (with the default artifact root) if missing; its tags and view kept current.

    ``limit``: the method that is the family's exact limit (a reference row on every table, never the champion).
    """
    name = experiment_name(key)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        from mlflow.exceptions import MlflowException

        try:
            experiment_id = client.create_experiment(name, artifact_location=default_artifact_root(client.tracking_uri))
        except MlflowException:  # another driver made it a moment ago: use theirs
            made = client.get_experiment_by_name(name)
            if made is None:
                raise
            experiment_id = made.experiment_id
    tags = {"metaopt.key": key, KIND_TAG: "custom_model_development"}  # MLflow's "model training" view
    if family is not None:
        tags["metaopt.family"] = family
    current = {} if experiment is None else experiment.tags
    if limit is not None:
        tags[LIMIT_TAG] = limit
    if metric is not None:
        tags.update({"metaopt.metric": metric.name, "metaopt.direction": metric.direction,
                     "metaopt.metric_percent": "true" if metric.percent else "false",
                     VIEW_TAG + VIEW_KEY: json.dumps(runs_view(metric))})
        if not current.get(NOTE_TAG, "").endswith(key_note(key, family, metric)):  # the board's champion line stays
            tags[NOTE_TAG] = key_note(key, family, metric)
    for tag, value in tags.items():
        if current.get(tag) != value:
            _set_experiment_tag(client, experiment_id, tag, value)
    return experiment_id


def _set_experiment_tag(client: Any, experiment_id: str, tag: str, value: str) -> None:
    """Set one experiment tag; a second driver that inserted the same tag a moment before (the store's unique
    constraint) makes this write an update of theirs."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_experiment_tag(experiment_id, tag, value)
    except MlflowException:
        if tag not in client.get_experiment(experiment_id).tags:
            raise
        client.set_experiment_tag(experiment_id, tag, value)


KIND_TAG = "mlflow.experimentKind"
NOTE_TAG = "mlflow.note.content"  # the description MLflow shows on an experiment, a run, a model
VIEW_TAG = "mlflow.sharedViewState."  # a runs-table view a link opens (MLflow 3.17's shared-view format)
VIEW_KEY = "metaopt"
LIMIT_TAG = "metaopt.limit"  # the method that is the family's exact limit (a reference, never a candidate)
RANK_TAG, TEST_TAG, SETTINGS_TAG = "metaopt.rank", "metaopt.test", "metaopt.settings"  # the landing page's columns
ADAPT_TAG = "metaopt.adapt"  # what adapting to one task costs: ``14 ms (p90 26 ms)``


def runs_view(metric: Metric) -> dict[str, Any]:
    """The runs table a key's link opens: the champion first, then the family's limit, then each method's best trial
    (``metaopt.rank``, written by ``board.write_board``), with the test score ± CI, the settings and the validation score.

    The format is MLflow 3.17's saved view state (search facets and UI state, as its UI keeps
    them); ``tests/test_ui_browser.py`` checks that the UI still reads it.
    """
    val = f"metrics.`val_{metric.name}`"
    return {"searchFilter": "", "orderByKey": f"tags.`{RANK_TAG}`", "orderByAsc": True, "startTime": "ALL",
            "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
            "selectedColumns": [f"tags.`{RANK_TAG}`", "params.`method`", f"tags.`{TEST_TAG}`", val,
                                f"tags.`{SETTINGS_TAG}`", f"tags.`{ADAPT_TAG}`", "tags.`metaopt.state`",
                                "attributes.`Models`"],
            "groupBy": None}


def experiment_link(base: str, experiment_id: str) -> str:
    """The UI address of a key's runs table, in MLflow's model-training view, with metaopt's columns."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    """The UI address of one run."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def model_link(base: str, name: str, version: str | None = None) -> str:
    """The UI address of a registered model (or one of its versions)."""
    return f"{base.rstrip('/')}/#/models/{name}" + (f"/versions/{version}" if version else "") + \
        "?workflowType=machine_learning"


def ui_base(tracking_uri: str) -> str:
    """Where the UI of a store is: the tracking server itself, or ``metaopt ui``'s default address."""
    return tracking_uri if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


def key_note(key: str, family: str | None, metric: Metric) -> str:
    """What a key's experiment holds (its description, after the champion line ``board.write_board`` puts first)."""
    better = "higher" if metric.higher_is_better else "lower"
    return (f"**{key}**: searches of the task family `{family}` with these settings. Each search is a parent run, "
            f"each trial a child run. Trials are ranked by validation {metric.label} (`val_{metric.name}`, {better} "
            f"is better); each method's best trial is scored on held-out test tasks (`test_{metric.name}`, mean "
            f"and 95% CI). The champion is the registered model `{registered_model_name(key)}@champion`.")


@dataclass(frozen=True)
class KeyExperiment:
    """A key's experiment: which family, its metrics (primary first), and whether it is a legacy per-family one."""

    key: str
    family: str
    experiment_id: str
    metrics: tuple[Metric, ...]
    legacy: bool = False
    limit: str | None = None  # the method that is the family's exact limit

    @property
    def metric(self) -> Metric:
        """The primary metric: what validation ranks by."""
        return self.metrics[0]


def key_experiments(client: Any, name: str) -> list[KeyExperiment]:
    """The experiments ``name`` stands for: one key, or every key of a family (and its legacy experiment)."""
    found: list[KeyExperiment] = []
    if name in FAMILIES:
        query = f"tags.`metaopt.family` = '{name}'"
        for experiment in client.search_experiments(filter_string=query):
            if "metaopt.key" in experiment.tags:
                found.append(_described(experiment))
        legacy = client.get_experiment_by_name(experiment_name(name))
        if legacy is not None and "metaopt.key" not in legacy.tags:
            found.append(KeyExperiment(name, name, legacy.experiment_id, legacy_metrics(name), legacy=True))
        return sorted(found, key=lambda e: (e.legacy, e.key))
    experiment = client.get_experiment_by_name(experiment_name(name))
    if experiment is not None and "metaopt.key" in experiment.tags:
        found.append(_described(experiment))
    return found


def legacy_metrics(family: str) -> tuple[Metric, ...]:
    """What a legacy experiment recorded: ranked by validation loss (lower is better), the family's others beside."""
    others = tuple(m for m in FAMILIES[family].metrics if m.name != "loss") if family in FAMILIES else ()
    return (Metric("loss", "minimize", "loss", mse), *others)


def _described(experiment: Any) -> KeyExperiment:
    """A key's experiment with its family's metrics (from its tags where the family is not installed)."""
    tags = experiment.tags
    family = tags.get("metaopt.family", "")
    if family in FAMILIES:
        sets = FAMILIES[family].metric_sets()
        metrics = next((m for m in sets if m[0].name == tags.get("metaopt.metric")), sets[0])
    else:
        name, direction = tags.get("metaopt.metric", "loss"), tags.get("metaopt.direction", "minimize")
        metrics = (Metric(name, direction, name, mse, percent=tags.get("metaopt.metric_percent") == "true"),)
    return KeyExperiment(tags["metaopt.key"], family, experiment.experiment_id, metrics, limit=tags.get(LIMIT_TAG))


def check_tracking_uri(uri: str | None, *, create: bool, timeout: float | None = None, exists: bool = True) -> str:
    """The resolved tracking URI, once it is known to answer; ``Problem`` (one line) where it does not.

    A local sqlite store must exist and be sound, or (``create``: a command that writes) its folder must
    be writable and the store is made (``exists=False``: the folder is checked, nothing is made); a tracking
    server must answer an MLflow request within ``timeout`` seconds
    and accept the credentials in ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` or
    ``MLFLOW_TRACKING_TOKEN``; a database store must accept a connection.
    """
    from metaopt.preflight import Fault, Problem, _cause, connect_timeout, writable_folder

    resolved = resolve_tracking_uri(uri)
    shown = uri or resolved
    timeout = connect_timeout() if timeout is None else timeout
    if resolved.startswith("sqlite:"):
        path = Path(resolved.removeprefix("sqlite:///"))
        if path.is_dir():
            raise Fault(f"--tracking-uri {shown}: {path} is a folder, not an MLflow store file")
        if path.exists():
            check_sqlite_store(path, shown, timeout)
        elif create or not exists:
            writable_folder(path.parent, f"--tracking-uri {shown}: folder")
            if create:
                create_sqlite_store(path, shown)
        else:
            raise Problem(f"--tracking-uri {shown}: no MLflow store at {path} (a search writes one; "
                          "or point --tracking-uri or MLFLOW_TRACKING_URI at yours)")
        return resolved
    if resolved.startswith(("http://", "https://")):
        _check_server(resolved, shown, timeout)
        return resolved
    if "://" in resolved and resolved.split("://", 1)[0].split("+")[0] in {"postgresql", "mysql", "mssql"}:
        import sqlalchemy

        try:
            engine = sqlalchemy.create_engine(resolved, connect_args=_db_timeout(resolved, timeout))
            with engine.connect():
                pass
        except Exception as exc:  # noqa: BLE001 - one line for the user, whatever the driver raised
            raise Problem(f"--tracking-uri {_without_password(shown)}: cannot connect ({_cause(exc)})") from None
    return resolved


def check_sqlite_store(path: Path, shown: str, timeout: float) -> None:
    """``Fault`` (one line) unless ``path`` opens as an SQLite database that is an MLflow store (or is empty: MLflow
    makes its tables): a truncated, garbage or foreign file is found here, before anything starts."""
    import sqlite3
    from contextlib import closing

    from metaopt.preflight import Fault

    aside = "move it aside (a search then makes a new store) or point --tracking-uri at another"
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)) as db:
            check = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise Fault(f"--tracking-uri {shown}: {path} is damaged or not an SQLite database ({exc}): {aside}") from None
    if check != "ok":
        raise Fault(f"--tracking-uri {shown}: {path} is damaged ({check[:120]}): {aside}")
    if tables and not {"experiments", "runs", "alembic_version"} <= tables:
        raise Fault(f"--tracking-uri {shown}: {path} is an SQLite database but not an MLflow store: {aside}")


def create_sqlite_store(path: Path, shown: str) -> None:
    """Make the MLflow store at ``path`` whole or not at all: its tables are made in a file beside it, which then
    takes its name in one step (two drivers at once: the first one's store is everyone's; a full disk or an
    interruption: no store, the next search starts again)."""
    import uuid

    from metaopt.preflight import Fault, _cause

    building = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        import logging

        quiet = logging.getLogger("mlflow.store.db.utils")  # "Creating initial MLflow database tables...": ours to say
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            store = SqlAlchemyStore(f"sqlite:///{building}", default_artifact_root(f"sqlite:///{path}"))
        finally:
            quiet.setLevel(level)
        store.engine.dispose()
        try:
            os.link(building, path)  # atomic, and never over a store another driver made meanwhile
        except FileExistsError:
            pass
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy, alembic and the disk raise many kinds; one line
        raise Fault(f"--tracking-uri {shown}: cannot create the MLflow store at {path} ({_cause(exc)[:200]})") from None
    finally:
        for leftover in (building, building.with_name(building.name + "-journal")):
            leftover.unlink(missing_ok=True)


def _db_timeout(url: str, timeout: float) -> dict[str, Any]:
    return {"connect_timeout": max(1, int(timeout))} if url.startswith(("postgresql", "mysql")) else {}


def _without_password(url: str) -> str:
    from metaopt.search.storage import without_password

    return without_password(url)


def _check_server(uri: str, shown: str, timeout: float) -> None:
    """One MLflow REST call (list one experiment) with the user's credentials; ``Problem`` on any failure."""
    import base64
    import ssl
    import urllib.error
    import urllib.request

    from metaopt.preflight import Problem, _socket_cause

    request = urllib.request.Request(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    context = None
    if uri.startswith("https://") and os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        context = ssl._create_unverified_context()  # noqa: S323 - the user asked for it, as MLflow's client honours
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context):  # noqa: S310 - http(s) only
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            cause = ("the server refused the credentials (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
                     if user or password or os.environ.get("MLFLOW_TRACKING_TOKEN") else
                     "the server wants credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        elif exc.code == 404:
            cause = "not an MLflow tracking server (HTTP 404 for the MLflow API)"
        else:
            cause = f"the MLflow server answered HTTP {exc.code}"
    except urllib.error.URLError as exc:
        reason = exc.reason
        cause = "cannot reach the MLflow server (" + (
            _socket_cause(reason) if isinstance(reason, OSError) else str(reason)) + ")"
    except (TimeoutError, OSError) as exc:
        cause = f"cannot reach the MLflow server ({_socket_cause(exc) if isinstance(exc, OSError) else 'no answer'})"
    raise Problem(f"--tracking-uri {shown}: {cause}")
