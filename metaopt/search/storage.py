"""Optuna storage: a journal file under ``.metaopt/`` by default (safe for several processes on one machine)."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage


def journal_storage(path: str | Path) -> optuna.storages.BaseStorage:
    """A journal-file storage at ``path`` (created with its folder if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))
