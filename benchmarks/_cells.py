"""Run a benchmark's cells in parallel processes, one line of JSON per finished cell, reusing earlier lines."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

Cell = dict[str, Any]


def load_cells(path: Path, matches: Callable[[Cell], bool], key: Callable[[Cell], Hashable]) -> dict[Hashable, Cell]:
    """Earlier cells of ``path`` that ``matches`` (same settings), by ``key``."""
    if not path.exists():
        return {}
    cells = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {key(cell): cell for cell in cells if matches(cell)}


def run_cells(
    path: Path,
    jobs: dict[Hashable, tuple],
    fn: Callable[..., Cell],
    *,
    workers: int,
    describe: Callable[[Cell], str],
) -> dict[Hashable, Cell]:
    """``fn(*jobs[k])`` for every key, ``workers`` at a time; each result is appended to ``path`` as it finishes."""
    results: dict[Hashable, Cell] = {}
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(fn, *args): key for key, args in jobs.items()}
        for future in as_completed(futures):
            cell = future.result()
            results[futures[future]] = cell
            with path.open("a") as f:
                f.write(json.dumps(cell) + "\n")
            print(f"  [{time.perf_counter() - start:6.0f}s] {describe(cell)}", flush=True)
    return results
