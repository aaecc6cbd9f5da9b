"""How long a user's own data takes to load: an image folder and a table, first (decoded, cached) and cached.

Generates the data (20,000 PNG images of 28x28 in 100 class folders; a CSV of 1,000,000 rows,
1,000 tasks, 8 numeric features), then builds the ``imagefolder`` and ``tabular`` families
twice with an empty cache: the first build reads and caches, the second reads the cache.
Each build runs in a fresh Python process (as a trial does), timed inside it from the call
to the built family, so imports are not counted. Prints a table and writes
``benchmarks/results/data_loading.json``.

    python benchmarks/data_loading.py [--images 20000] [--rows 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BUILD = """
import json, sys, time
from metaopt.tasks import FAMILIES
name, options = sys.argv[1], json.loads(sys.argv[2])
start = time.perf_counter()
family = FAMILIES[name](**options)
print(json.dumps({"seconds": time.perf_counter() - start, "shape": list(family.input_shape)}))
"""


def make_images(root: Path, count: int, classes: int = 100) -> None:
    """``count`` random-blob 28x28 PNGs spread over ``classes`` folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (28, 28))
        for i in range(count // classes):
            pixels = np.clip(base + rng.normal(0, 30, (28, 28)), 0, 255).astype("uint8")
            Image.fromarray(pixels, "L").save(folder / f"{i:05d}.png")


def make_table(path: Path, rows: int, tasks: int = 1000, features: int = 8) -> None:
    """A CSV of ``rows`` rows: a task column, ``features`` numeric features and a target."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features)).astype("float32")
    columns = {"task": rng.integers(0, tasks, rows), **{f"f{j}": x[:, j] for j in range(features)}}
    columns["y"] = x @ rng.normal(size=features).astype("float32")
    pcsv.write_csv(pa.table(columns), path)


def timed_build(name: str, options: dict, cache: Path) -> float:
    """Seconds to build family ``name`` in a fresh process with ``XDG_CACHE_HOME=cache``."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run([sys.executable, "-c", BUILD, name, json.dumps(options)], capture_output=True, text=True,
                          env=env, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    """Generate, load twice, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="metaopt-data-") as tmp:
        where = args.keep or Path(tmp)
        images, table, cache = where / "images", where / "table.csv", where / "cache"
        start = time.perf_counter()
        if not images.is_dir():
            make_images(images, args.images)
        if not table.is_file():
            make_table(table, args.rows)
        print(f"generated in {time.perf_counter() - start:.1f} s: {args.images} images, {args.rows} rows")
        cases = [
            ("imagefolder", f"{args.images:,} images of 28x28", {"root": str(images)}, 2.0, None),
            ("tabular", f"{args.rows:,}-row CSV", {"path": str(table), "task_column": "task", "target": "y",
                                                   "kind": "regression"}, 2.0, 10.0),
        ]
        results = []
        for name, what, options, cached_target, first_target in cases:
            first = timed_build(name, options, cache)
            cached = timed_build(name, options, cache)
            results.append({"family": name, "data": what, "first_s": round(first, 2), "cached_s": round(cached, 2),
                            "first_target_s": first_target, "cached_target_s": cached_target})
    print(f"\n{'family':<12} {'data':<26} {'first load':>11} {'cached':>8}   targets")
    for r in results:
        first_t = f"first <= {r['first_target_s']:g} s, " if r["first_target_s"] else ""
        print(f"{r['family']:<12} {r['data']:<26} {r['first_s']:>9.2f} s {r['cached_s']:>6.2f} s   "
              f"{first_t}cached <= {r['cached_target_s']:g} s")
    out = REPO / "benchmarks" / "results" / "data_loading.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
