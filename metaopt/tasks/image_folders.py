"""Few-shot datasets read from a directory: Omniglot (torchvision's layout) and miniImageNet (Ravi & Larochelle CSVs).

Images are read once with Pillow (no torchvision: its PyPI wheel does not load
beside the CPU torch build), resized, and cached as one tensor file under the user's
cache directory, named by a digest of the directory's listing.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import model_validator

from metaopt.tasks.base import ContextBudget, Count, FamilyOptions, check_context, context_suffix
from metaopt.tasks.cache import cached
from metaopt.tasks.episodes import EpisodeFamily

OMNIGLOT_PARTS = ("images_background", "images_evaluation")
OMNIGLOT_SPLIT = (1100, 100)  # train, val classes; the remaining 423 are test (Vinyals et al. 2016: 1200 / 423)
MINI_SPLITS = ("train", "val", "test")


def _listing_digest(paths: list[Path], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for path in paths:
        h.update(f"{path}:{path.stat().st_size}".encode())
    return h.hexdigest()[:16]


def read_image(path: Path, size: int, mode: str) -> torch.Tensor:
    """The image at ``path`` as uint8 ``[size, size]`` (mode ``L``) or ``[3, size, size]`` (``RGB``), resized."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert(mode).resize((size, size), Image.Resampling.LANCZOS)
        pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(size, size) if mode == "L" else pixels.view(size, size, 3).permute(2, 0, 1)


def check_omniglot_root(root: str | Path) -> Path:
    """``root`` if it holds ``images_background/`` and ``images_evaluation/``, else a clear ``FileNotFoundError``."""
    root = Path(root).expanduser()
    missing = [part for part in OMNIGLOT_PARTS if not (root / part).is_dir()]
    if missing:
        raise FileNotFoundError(f"omniglot: {root / missing[0]} not found (expected {' and '.join(OMNIGLOT_PARTS)}/ "
                                f"with alphabet/character/*.png inside, torchvision's layout)")
    return root


class FolderOptions(FamilyOptions):
    """A dataset directory (``root``, checked when the job is read) and the episode shape."""

    path_fields: ClassVar[tuple[str, ...]] = ("root",)
    root: str | None = None
    ways: Count = 5
    shots: Count = 1
    context: ContextBudget = None

    @model_validator(mode="after")
    def _root_is_there(self) -> FolderOptions:
        name = self.family
        check_context(self.context, self.ways * self.shots, "ways x shots")
        if self.root is None:
            raise ValueError(f"{name} reads a dataset directory: set family.root")
        try:
            self._check(self.root)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
        return self


class OmniglotOptions(FolderOptions):
    """Omniglot in torchvision's layout; rotations by 90 degrees as new classes by default."""

    family: ClassVar[str] = "omniglot"
    queries: Count = 5
    rotations: bool = True
    jitter: bool = False

    @staticmethod
    def _check(root: str) -> None:
        check_omniglot_root(root)


class MiniImageNetOptions(FolderOptions):
    """miniImageNet with Ravi & Larochelle's split CSVs; 15 queries a class, as in the literature."""

    family: ClassVar[str] = "miniimagenet"
    queries: Count = 15
    jitter: bool = False

    @staticmethod
    def _check(root: str) -> None:
        check_miniimagenet_root(root)


class Omniglot(EpisodeFamily):
    """Omniglot (Lake et al. 2015) at 28x28, white strokes on black; 1100/100/423 character classes."""

    name = "omniglot"
    Options = OmniglotOptions

    def __init__(self, *, root: str, ways: int = 5, shots: int = 1, queries: int = 5, rotations: bool = True,
                 jitter: bool = False, cache_dir: str | Path | None = None, context: int | None = None) -> None:
        base = check_omniglot_root(root)
        characters = sorted(c for part in OMNIGLOT_PARTS for a in sorted((base / part).iterdir()) if a.is_dir()
                            for c in sorted(a.iterdir()) if c.is_dir())
        files = [sorted(c.glob("*.png")) for c in characters]
        if not characters:
            raise FileNotFoundError(f"omniglot: no character folders under {base}")

        def build() -> dict:
            most = max(len(f) for f in files)
            images = torch.zeros(len(files), most, 28, 28, dtype=torch.uint8)
            available = torch.zeros(len(files), most, dtype=torch.bool)
            for c, pngs in enumerate(files):
                for d, png in enumerate(pngs):
                    images[c, d] = 255 - read_image(png, 28, "L")  # Omniglot draws black on white
                    available[c, d] = True
            return {"images": images, "available": available, "classes": [str(c.relative_to(base)) for c in characters]}

        data = cached("omniglot", _listing_digest([p for f in files for p in f], "28"), build, cache_dir)
        n_train, n_val = OMNIGLOT_SPLIT if len(characters) >= 1623 else _proportional(len(characters))
        order = torch.arange(len(characters))
        splits = {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
        self.classes = data["classes"]
        super().__init__(name="omniglot", images=data["images"], available=data["available"], splits=splits,
                         ways=ways, shots=shots, queries=queries, rotations=rotations, jitter=jitter,
                         context=context)


def check_miniimagenet_root(root: str | Path) -> Path:
    """``root`` if it holds ``images/`` and the split CSVs, else a clear ``FileNotFoundError``."""
    root = Path(root).expanduser()
    for needed in ("images", *(f"{s}.csv" for s in MINI_SPLITS)):
        if not (root / needed).exists():
            raise FileNotFoundError(f"miniimagenet: {root / needed} not found (expected images/ and "
                                    f"train.csv, val.csv, test.csv with columns filename,label: Ravi & Larochelle)")
    return root


class MiniImageNet(EpisodeFamily):
    """miniImageNet (Vinyals et al. 2016; Ravi & Larochelle 2017 splits) at 84x84 RGB; 64/16/20 classes."""

    name = "miniimagenet"
    Options = MiniImageNetOptions

    @classmethod
    def key(cls, options: MiniImageNetOptions) -> str:
        """``miniimagenet-5w1s-q15`` (no rotations here)."""
        return (f"{cls.name}-{options.ways}w{options.shots}s-q{options.queries}{'-jitter' if options.jitter else ''}"
                f"{context_suffix(options.context)}")

    def __init__(self, *, root: str, ways: int = 5, shots: int = 1, queries: int = 15, jitter: bool = False,
                 cache_dir: str | Path | None = None, context: int | None = None) -> None:
        base = check_miniimagenet_root(root)
        by_split: dict[str, dict[str, list[str]]] = {}
        for split in MINI_SPLITS:
            with open(base / f"{split}.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and not {"filename", "label"} <= set(rows[0]):
                raise ValueError(f"miniimagenet: {base / f'{split}.csv'} needs the columns filename,label")
            classes: dict[str, list[str]] = {}
            for row in rows:
                classes.setdefault(row["label"], []).append(row["filename"])
            by_split[split] = classes
        labels = [label for split in MINI_SPLITS for label in sorted(by_split[split])]
        files = [[base / "images" / name for name in by_split[s][label]] for s in MINI_SPLITS for label in sorted(by_split[s])]

        def build() -> dict:
            most = max(len(f) for f in files)
            images = torch.zeros(len(files), most, 3, 84, 84, dtype=torch.uint8)
            available = torch.zeros(len(files), most, dtype=torch.bool)
            for c, paths in enumerate(files):
                for d, path in enumerate(paths):
                    images[c, d], available[c, d] = read_image(path, 84, "RGB"), True
            return {"images": images, "available": available}

        data = cached("miniimagenet", _listing_digest([p for f in files for p in f], "84"), build, cache_dir)
        counts = [len(by_split[s]) for s in MINI_SPLITS]
        starts = [0, counts[0], counts[0] + counts[1]]
        splits = {s: torch.arange(starts[i], starts[i] + counts[i]) for i, s in enumerate(MINI_SPLITS)}
        self.classes = labels
        super().__init__(name="miniimagenet", images=data["images"], available=data["available"], splits=splits,
                         ways=ways, shots=shots, queries=queries, jitter=jitter, context=context)


def _proportional(total: int) -> tuple[int, int]:
    """Train and val class counts for a smaller (fixture) Omniglot: the same 1100/100/423 proportions."""
    n_train = max(1, round(total * 1100 / 1623))
    n_val = max(1, round(total * 100 / 1623))
    return n_train, n_val
