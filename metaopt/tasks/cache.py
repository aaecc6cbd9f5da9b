"""The on-disk cache of prepared datasets: one tensor file per dataset version, written atomically."""

from __future__ import annotations

import os
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
    if path.is_file():
        return torch.load(path, weights_only=True)
    data = build()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(data, tmp)
    tmp.replace(path)
    return data
