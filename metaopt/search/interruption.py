"""Stopping a search cleanly: a request (from SIGINT or SIGTERM) the driver honours at safe points.

The first signal asks the search to stop: the driver stops asking for trials, cancels
the running ones, records them as interrupted (``metaopt resume`` reruns them from
their checkpoints) and closes its record. Inside a trial that runs in the driver's own
process (the in-process executor) the signal raises ``Interrupted`` at once; elsewhere
the driver notices it within a fraction of a second. A second signal ends the process
at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(BaseException):
    """The search was asked to stop (a ``BaseException``, so no ``except Exception`` in a trial swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class StopRequest:
    """Set by a signal handler, read by the driver; ``check()`` raises ``Interrupted`` once it is set."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._raise_now = False

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum is not None

    def request(self, signum: int) -> None:
        """Ask the search to stop; raises ``Interrupted`` here if the driver is inside an interruptible section."""
        self.signum = signum
        if self._raise_now:
            self._raise_now = False
            raise Interrupted(signum)

    def check(self) -> None:
        """Raise ``Interrupted`` if a stop was asked for."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A section a signal may break into at once (a trial running in this process)."""
        self.check()
        self._raise_now = True
        try:
            yield
        finally:
            self._raise_now = False


@contextlib.contextmanager
def handle_signals(stop: StopRequest, on_first: callable | None = None) -> Iterator[StopRequest]:  # type: ignore[valid-type]
    """SIGINT and SIGTERM ask ``stop`` to stop (``on_first`` is told); a second one ends the process at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.requested:
            sys.stderr.write(f"\n{signal.Signals(signum).name} again: stopping now\n")
            sys.stderr.flush()
            os._exit(EXIT_CODES.get(signum, 128 + signum))
        if on_first is not None:
            on_first(signum)
        stop.request(signum)

    previous = {sig: signal.signal(sig, handler) for sig in EXIT_CODES}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def children_ignore_sigint() -> Iterator[None]:
    """Processes started inside ignore SIGINT (the disposition is inherited), so a terminal's Ctrl-C reaches only us.

    A local Ray's head processes share the driver's process group: without this, Ctrl-C
    would kill them before the driver can cancel its trials and shut Ray down.
    """
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to protect
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
