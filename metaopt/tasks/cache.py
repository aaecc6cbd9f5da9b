"""The on-disk cache of prepared datasets: one tensor file per dataset version, written atomically, checksummed.

Each ``<name>-<digest>.pt`` has a ``.sha256`` beside it, written after it; a file whose bytes
do not match (damaged, truncated, replaced by another file) or that does not load is built
again, with a ``DataWarning`` naming it, never a traceback.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import torch


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/metaopt`` or ``~/.cache/metaopt``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "metaopt"


def cached(name: str, digest: str, build: Callable[[], dict], cache_dir: str | Path | None = None) -> dict:
    """The dataset ``<name>-<digest>.pt`` from the cache, or ``build()`` it and cache it (plain tensors only)."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"{name}-{digest}.pt"
    if path.is_file() or path.with_suffix(".sha256").is_file():
        data = _load(path)
        if data is not None:
            return data
    data = build()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # two processes building at once: no clash
    torch.save(data, tmp)
    checksum = _sha256(tmp)
    tmp.replace(path)
    sidecar = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.sha256")
    sidecar.write_text(checksum + "\n")
    sidecar.replace(path.with_suffix(".sha256"))
    return data


def _load(path: Path) -> dict | None:
    """The cached data, or None (with a ``DataWarning``) where the file is missing its checksum, does not match it,
    or does not load as a dataset."""
    from metaopt.tasks.base import DataWarning

    try:
        expected = path.with_suffix(".sha256").read_text().strip()
        if _sha256(path) != expected:
            raise ValueError("its bytes do not match its checksum")
        data = torch.load(path, weights_only=True)
        if not isinstance(data, dict):
            raise ValueError(f"it holds a {type(data).__name__}, not a dataset")
        return data
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways; it is rebuilt whatever the way
        reason = "no checksum beside it" if isinstance(exc, FileNotFoundError) else str(exc).splitlines()[0][:120]
        warnings.warn(f"{path}: a damaged or foreign file in metaopt's data cache ({reason}): built again",
                      DataWarning, stacklevel=3)
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
