"""Preflight: every address, URI and folder a command needs, checked in seconds before anything starts.

A failed check is a ``Problem``: one line naming the flag, the value and the cause,
for the command to print before it exits with code 2, having started nothing (no Ray,
no study, no run). Timeouts: ``METAOPT_CONNECT_TIMEOUT_S`` for the tracking server and
the Optuna database (default 5 s), ``METAOPT_RAY_TIMEOUT_S`` for a Ray cluster (default
15 s: a head that is still starting gets that long to answer).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse


class Problem(Exception):
    """A preflight check failed; ``str()`` is the one line for the user."""


class Fault(Problem):
    """A preflight check found the environment broken, not the input: a damaged store, a full disk (exit code 1)."""


def connect_timeout() -> float:
    """Seconds to wait for a tracking server or a database (``METAOPT_CONNECT_TIMEOUT_S``, default 5)."""
    return float(os.environ.get("METAOPT_CONNECT_TIMEOUT_S", "5"))


def ray_timeout() -> float:
    """Seconds to wait for a Ray cluster to answer (``METAOPT_RAY_TIMEOUT_S``, default 15)."""
    return float(os.environ.get("METAOPT_RAY_TIMEOUT_S", "15"))


def writable_folder(path: str | Path, flag: str, *, create: bool = True) -> Path:
    """``path`` as a folder this process can write in (made if missing and ``create``)."""
    folder = Path(path).expanduser()
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            raise Problem(f"{flag} {path}: no such folder")
        probe = folder / f".metaopt-probe-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise Problem(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None
    return folder


def optuna_storage(url: str | None) -> None:
    """The Optuna database ``url`` accepts a connection (nothing to check for the journal file default)."""
    if not url:
        return
    from metaopt.search.storage import describe, open_storage

    try:
        open_storage(url)
    except ImportError:
        raise Problem(f"--storage: {describe(url)}: needs its database driver "
                      "(PostgreSQL: pip install 'metaopt[cluster]')") from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and redis raise many kinds; the user needs one line
        raise Problem(f"--storage: {describe(url)}: cannot connect ({_cause(exc)})") from None


def ray_address(address: str | None, timeout: float | None = None) -> None:
    """The Ray cluster at ``address`` (``host:port`` or ``ray://host:port``) answers within ``timeout`` seconds."""
    if not address or address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"gcs://{address}")
    if parsed.hostname is None or parsed.port is None:
        raise Problem(f"--address {address}: expected host:port or ray://host:port")
    timeout = ray_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    cause = "no answer"
    while True:
        try:
            with socket.create_connection((parsed.hostname, parsed.port), timeout=min(2.0, timeout)):
                return
        except OSError as exc:
            cause = _socket_cause(exc)
        if time.monotonic() + 0.5 > deadline:
            raise Problem(f"--address {address}: no Ray cluster answers there ({cause}) after {timeout:g} s "
                          "(METAOPT_RAY_TIMEOUT_S waits longer)")
        time.sleep(0.5)


def machine_resources(cpus_per_trial: int, gpus_per_trial: float, *, local: bool, precision: str = "fp32") -> None:
    """What a trial asks of this machine, where the search runs here (``local``: no ``--address``): the GPUs it
    needs exist, one trial's CPUs are at most the machine's (a trial asking for more is never scheduled), and
    ``precision: bf16`` has native bf16 on the device the trials train on (or every trial would fail on it)."""
    if not local:
        return  # a cluster's own resources are known only to the cluster: Ray says what it cannot place
    cpus = os.cpu_count() or 1
    if cpus_per_trial > cpus:
        raise Problem(f"resources.cpus_per_trial: {cpus_per_trial} but this machine has {cpus} CPUs "
                      f"(at most {cpus}; --address runs on a cluster)")
    if gpus_per_trial > 0:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise Problem(f"resources.gpus_per_trial: {gpus_per_trial:g} but this machine has no CUDA GPU "
                          "(0 trains on the CPU; --address runs on a cluster)")
        if gpus_per_trial > gpus:
            raise Problem(f"resources.gpus_per_trial: {gpus_per_trial:g} but this machine has {gpus} GPUs "
                          f"(at most {gpus})")
    if precision == "bf16":
        import torch

        from metaopt.search.fit import bf16_supported

        device = torch.device("cuda" if gpus_per_trial > 0 else "cpu")
        if not bf16_supported(device):
            where = "GPU" if device.type == "cuda" else "CPU (no AVX-512 BF16 or AMX)"
            raise Problem(f"precision: bf16 but this machine's {where} has no native bf16, where it would only be "
                          "slower (allowed: fp32, bf16; fp32 runs anywhere)")


def _socket_cause(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer"
    return exc.strerror or type(exc).__name__


def _cause(exc: BaseException) -> str:
    """The innermost reason of ``exc`` in a few words (connection refused, unknown host, ...)."""
    inner: BaseException | None = exc
    while inner is not None:
        if isinstance(inner, OSError) and not isinstance(inner, FileNotFoundError):
            return _socket_cause(inner)
        inner = inner.__cause__ or inner.__context__
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), type(exc).__name__)
    for marker, words in (("Connection refused", "connection refused"), ("could not translate host", "unknown host"),
                          ("timeout expired", "no answer"), ("does not exist", first.strip())):
        if marker in str(exc):
            return words
    return first.strip()
