"""Stopping what a test started, by PID: every process carrying a marker in its environment, and their children."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def _parents() -> dict[int, int]:
    parents = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return parents


def marked(marker: str) -> set[int]:
    """PIDs whose environment holds ``NAME=VALUE`` ``marker``."""
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker.encode() in (proc / "environ").read_bytes().split(b"\0"):
                    found.add(int(proc.name))
    return found


def kill_marked(marker: str) -> None:
    """SIGKILL the marked processes and all their descendants (Ray's agents start with a clean environment)."""
    parents = _parents()
    doomed = marked(marker)
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in doomed} - doomed - {os.getpid()}
        grew = bool(children)
        doomed |= children
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
