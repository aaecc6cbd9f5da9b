"""Search drivers in processes of their own that start in milliseconds: forked from a server process that has
imported metaopt, MLflow and Optuna once (``multiprocessing``'s forkserver), not a fresh interpreter's seconds of
imports each. A driver here is a real process: killed with SIGKILL, limited by ``setrlimit``, nothing shared with the
test's own process but the files it writes."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PRELOAD = ["metaopt.cli", "metaopt.search.launch", "metaopt.tracking", "mlflow.tracking", "optuna"]


def _context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # only heard before the server's first start: the first call here
    return context


def start(target: Callable[..., Any], *args: Any, cwd: Path, env: dict[str, str] | None = None,
          file_size_limit: int | None = None) -> tuple[multiprocessing.Process, Path]:
    """``target(*args)`` in a new driver process in ``cwd`` with ``env`` added to its environment (and writes past
    ``file_size_limit`` bytes failing as on a full disk); returns the process and the file its stdout and stderr go to.
    ``target`` returns the exit code."""
    output = cwd / f".driver-{os.urandom(4).hex()}.log"
    process = _context().Process(target=_driver, args=(target, args, str(cwd), env or {}, file_size_limit,
                                                       str(output)))
    process.start()
    return process, output


def run(target: Callable[..., Any], *args: Any, cwd: Path, env: dict[str, str] | None = None,
        file_size_limit: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``start``, then wait: the exit code (``-9`` for a SIGKILL) and what it wrote, as ``subprocess.run`` gives."""
    process, output = start(target, *args, cwd=cwd, env=env, file_size_limit=file_size_limit)
    return finish(process, output, timeout)


def finish(process: multiprocessing.Process, output: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Wait for a driver ``start`` made (killed past ``timeout``) and read its output."""
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()
        raise TimeoutError(f"the driver did not finish in {timeout} s: {output.read_text()[-3000:]}")
    text = output.read_text()
    output.unlink()
    return subprocess.CompletedProcess([], process.exitcode, "", text)


def main(args: list[str]) -> int:
    """The ``metaopt`` command with ``args``, as the installed command runs it."""
    from metaopt.cli import main as cli

    return cli(args)


def _driver(target: Callable[..., Any], args: tuple, cwd: str, env: dict[str, str], file_size_limit: int | None,
            output: str) -> None:
    import resource
    import signal

    os.chdir(cwd)
    os.environ.update(env)
    with open(output, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    if file_size_limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails (EFBIG), as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, resource.RLIM_INFINITY))
    try:
        code = target(*args)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    sys.exit(code)
