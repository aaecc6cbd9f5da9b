"""Optuna storage: a journal file under ``.metaopt/`` by default (safe for several processes on one machine),
a database URL (PostgreSQL, MySQL, sqlite) that every node of a cluster reaches, or a Redis journal
(``redis://host:6379/0``).

A database storage keeps a heartbeat per running trial (the driver that runs it beats every
``METAOPT_HEARTBEAT_S`` seconds, default 20): a trial whose driver vanished is failed after
``METAOPT_HEARTBEAT_GRACE_S`` (default 60) and retried by any driver of the study, never left RUNNING.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

JOURNAL = "optuna.journal"


def journal_storage(path: str | Path) -> optuna.storages.BaseStorage:
    """A journal-file storage at ``path`` (created with its folder if missing), written again from this process's copy
    if the file is deleted or replaced while in use (``KeptJournal``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(KeptJournal(str(path)))


class KeptJournal(JournalFileBackend):
    """Optuna's journal file, with a copy of every record this process has read: when the file vanishes (deleted,
    moved, replaced by a new one) mid-search, it is written again from the copy, with a warning, and the search
    goes on (and can be resumed) instead of failing on an empty journal."""

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        self._kept: list[dict] = []
        self._inode = os.stat(file_path).st_ino

    def read_logs(self, log_number_from: int):  # noqa: ANN201 - a generator of Optuna's records, as the base's
        """Optuna's ``read_logs``, after making sure the file is the one read so far; each new record kept."""
        self._guard()
        for number, log in enumerate(super().read_logs(log_number_from), start=log_number_from):
            if number == len(self._kept):
                self._kept.append(log)
            yield log

    def append_logs(self, logs: list[dict]) -> None:
        """Optuna's ``append_logs``, to the file read so far (written again first if it vanished)."""
        self._guard()
        super().append_logs(logs)

    def _guard(self) -> None:
        try:
            if os.stat(self._file_path).st_ino == self._inode:
                return
        except FileNotFoundError:
            pass
        self._restore()

    def _restore(self) -> None:
        import json
        import uuid
        import warnings

        path = Path(self._file_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        building = path.with_name(f".{path.name}.restoring-{uuid.uuid4().hex[:8]}")
        # Optuna writes a record as json.dumps(log, separators=(",", ":")), which a json.loads round trip gives back
        # byte for byte: the file is rebuilt as it was, so other processes' byte offsets into it stay right.
        self._lock.acquire()  # no other driver appends to a file half rebuilt
        try:
            with open(building, "wb") as f:
                f.write(b"".join(json.dumps(log, separators=(",", ":")).encode() + b"\n" for log in self._kept))
                f.flush()
                os.fsync(f.fileno())
            os.replace(building, path)
        finally:
            self._lock.release()
        self._inode = os.stat(path).st_ino
        self._log_number_offset = {0: 0}
        warnings.warn(f"the Optuna journal {path} was deleted or replaced during the search: written again from "
                      f"this process's copy ({len(self._kept)} records)", RuntimeWarning, stacklevel=2)


def storage_locator(workdir: str | Path, url: str | None = None) -> str:
    """Where a search's study lives, as one string: the database ``url``, or the journal file in ``workdir``."""
    return url if url else str(Path(workdir).resolve() / JOURNAL)


def heartbeat_s() -> int:
    """Seconds between two heartbeats of a running trial (``METAOPT_HEARTBEAT_S``, default 20)."""
    return max(1, int(float(os.environ.get("METAOPT_HEARTBEAT_S", "20"))))


def heartbeat_grace_s() -> int:
    """Seconds without a heartbeat after which a running trial counts as lost (``METAOPT_HEARTBEAT_GRACE_S``)."""
    return max(heartbeat_s() + 1, int(float(os.environ.get("METAOPT_HEARTBEAT_GRACE_S", str(3 * heartbeat_s())))))


StaleCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


def open_storage(locator: str, *, on_stale: StaleCallback | None = None,
                 grace_s: int | None = None) -> optuna.storages.BaseStorage:
    """The Optuna storage a locator names: a database URL, a Redis journal (``redis://``) or a journal file path.

    ``on_stale``: called for each trial a database storage fails for want of a heartbeat.
    """
    if locator.startswith(("redis://", "rediss://", "unix://")):
        from optuna.storages.journal import JournalRedisBackend

        return JournalStorage(JournalRedisBackend(locator))
    if "://" in locator:
        engine_kwargs = {}
        if locator.startswith(("postgresql", "mysql")):  # a database that is not there fails in seconds
            from metaopt.preflight import connect_timeout

            engine_kwargs = {"connect_args": {"connect_timeout": max(1, int(connect_timeout()))}}
        import time
        import warnings

        import sqlalchemy.exc

        for attempt in range(3):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: "experimental"
                    return optuna.storages.RDBStorage(
                        locator, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_s(),
                        grace_period=grace_s or heartbeat_grace_s(), heartbeat_stale_trial_callback=on_stale,
                    )
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Two drivers creating Optuna's tables in a new database at once: the second finds them made.
                if attempt == 2:
                    raise
                time.sleep(1.0)
    return journal_storage(locator)


def stale_trial_ids(locator: str, study: optuna.Study, grace_s: int) -> set[int]:
    """Running trials of ``study`` nobody has beaten for ``grace_s`` seconds (none for storages without heartbeats)."""
    storage = open_storage(locator, grace_s=grace_s)
    finder = getattr(storage, "_get_stale_trial_ids", None)  # Optuna's own query; heartbeats are RDB-only
    if finder is None or not optuna.storages._heartbeat.is_heartbeat_enabled(storage):
        return set()
    return set(finder(study._study_id))


def readable_storage(locator: str) -> optuna.storages.BaseStorage:
    """``open_storage(locator)``, its studies listed once: ``ValueError`` in one line naming the file if it cannot be read.

    A journal file is read whole when opened: a damaged one (a line cut short, a record
    Optuna does not know) fails here, before a search appends to it.
    """
    try:
        if "://" not in locator and Path(locator).is_file():
            _check_journal_lines(Path(locator))
        storage = open_storage(locator)
        optuna.get_all_study_names(storage)
    except ImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - JSON errors, Optuna's assertions, database errors: one line
        what = "database" if "://" in locator else "journal"
        text = str(exc).strip().splitlines()
        raise ValueError(f"cannot read the Optuna {what} {describe(locator)} "
                         f"({type(exc).__name__}{': ' + text[0] if text else ''})") from None
    return storage


def _check_journal_lines(path: Path) -> None:
    """Every line a journal record: Optuna skips a damaged last line when reading, then appends onto it."""
    import json

    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            try:
                json.loads(line)
            except ValueError:
                raise ValueError(f"line {number} is not a journal record") from None


def without_password(locator: str) -> str:
    """A URL or locator without its password, for messages and records."""
    if "://" in locator and "@" in locator:
        scheme, rest = locator.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return locator


describe = without_password  # how a storage locator is shown
