"""Optuna storage: a journal file under ``.metaopt/`` by default (safe for several processes on one machine),
or a database URL (PostgreSQL, MySQL, sqlite) that every node of a cluster reaches.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage

JOURNAL = "optuna.journal"


def journal_storage(path: str | Path) -> optuna.storages.BaseStorage:
    """A journal-file storage at ``path`` (created with its folder if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def storage_locator(workdir: str | Path, url: str | None = None) -> str:
    """Where a search's study lives, as one string: the database ``url``, or the journal file in ``workdir``."""
    return url if url else str(Path(workdir).resolve() / JOURNAL)


def open_storage(locator: str) -> optuna.storages.BaseStorage:
    """The Optuna storage a locator names: a database URL (``scheme://...``) or a journal file path."""
    if "://" in locator:
        return optuna.storages.RDBStorage(locator)
    return journal_storage(locator)


def describe(locator: str) -> str:
    """The locator without a password, for messages."""
    if "://" in locator and "@" in locator:
        scheme, rest = locator.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return locator
