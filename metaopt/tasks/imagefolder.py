"""``imagefolder``: N-way K-shot episodes from a user's folder of images, one sub-folder per class.

Two layouts: ``ROOT/<class>/<image>`` (classes split 60/20/20 by a seeded permutation,
recorded in the cache) or ``ROOT/train/<class>/...``, ``ROOT/val/...``, ``ROOT/test/...``
when those folders exist. Images (png, jpg, jpeg, bmp, gif) are decoded once, in
parallel, resized to ``size`` pixels, and cached as one tensor file named by a digest of
the listing (names, sizes, modification times) and the decode settings, so a changed file
decodes the folder anew. The family's key holds a digest of the listing (names and sizes):
two folders never share a leaderboard.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, PositiveInt, field_validator

from metaopt.tasks.base import DataWarning
from metaopt.tasks.cache import cached
from metaopt.tasks.episodes import EpisodeFamily, EpisodeOptions, episode_key
from metaopt.tasks.image_folders import read_image

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLIT_FOLDERS = ("train", "val", "test")
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.6, 0.2)  # train, val; the rest is test
FORMAT = 1


@dataclass(frozen=True)
class Listing:
    """What a folder holds: each class's split (None: to be drawn), name and image files."""

    root: Path
    split_layout: bool
    classes: list[tuple[str | None, str, list[Path]]]
    skipped: tuple[str, ...] = ()  # entries that could not be read or named: "path: why"

    def digest(self, *, with_times: bool) -> str:
        """A digest of the relative names and sizes (and modification times, for the cache)."""
        h = hashlib.sha256(f"{FORMAT}:{self.split_layout}".encode())
        for _, _, files in self.classes:
            for path in files:
                stat = path.stat()
                h.update(f"{path.relative_to(self.root)}\0{stat.st_size}".encode())
                if with_times:
                    h.update(f"\0{stat.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


def scan(root: str | Path) -> Listing:
    """The classes under ``root`` in either layout; ``FileNotFoundError`` (one line) where the layout is wrong."""
    try:
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"imagefolder: {root}: no such folder")
    except (OSError, RuntimeError) as exc:  # a symlink loop: RuntimeError from resolve(), ELOOP from stat()
        if isinstance(exc, FileNotFoundError):
            raise
        raise FileNotFoundError(f"imagefolder: {root}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    present = [s for s in SPLIT_FOLDERS if (root / s).is_dir()]
    if present:
        missing = [s for s in SPLIT_FOLDERS if s not in present]
        if missing:
            raise FileNotFoundError(f"imagefolder: {root / missing[0]} not found ({root} has {', '.join(present)}/: "
                                    "the split layout needs train/, val/ and test/, each with one folder per class)")
        skipped: list[str] = []
        classes = [(split, name, files) for split in SPLIT_FOLDERS for name, files in _classes(root / split, skipped)]
    else:
        skipped = []
        classes = [(None, name, files) for name, files in _classes(root, skipped)]
    if not classes:
        raise FileNotFoundError(f"imagefolder: {root}: no class folders with images ({', '.join(EXTENSIONS)}) inside; "
                                "expected ROOT/<class>/<image> or ROOT/train|val|test/<class>/<image>"
                                + (f" ({len(skipped)} entries could not be read, first: {skipped[0]})" if skipped else ""))
    return Listing(root, bool(present), classes, tuple(skipped))


def _classes(folder: Path, skipped: list[str]) -> list[tuple[str, list[Path]]]:
    """The class folders under ``folder`` and their image files; what cannot be read or named (a symlink loop, no
    permission, a name that is not text) is left out and said in ``skipped``."""
    found = []
    for entry in _entries(folder, skipped):
        if entry.name.startswith(".") or not _is(entry, "dir", skipped):
            continue
        files = sorted(Path(f.path) for f in _entries(Path(entry.path), skipped)
                       if f.name.lower().endswith(EXTENSIONS) and _is(f, "file", skipped))
        if files:
            found.append((entry.name, files))
    return found


def _entries(folder: Path, skipped: list[str]) -> list[os.DirEntry]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        skipped.append(f"{folder}: {exc.strerror or type(exc).__name__}")
        return []
    named = []
    for entry in entries:
        try:
            entry.name.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8 in the name: it cannot be recorded or shown as text
            skipped.append(f"{os.fsdecode(folder)}/{ascii(entry.name)}: its name is not UTF-8 text")
            continue
        named.append(entry)
    return named


def _is(entry: os.DirEntry, kind: str, skipped: list[str]) -> bool:
    """Whether ``entry`` is a ``kind`` ("dir" or "file"), links followed; one that cannot be followed or read (a link
    loop, a dangling link, no permission) is said in ``skipped``."""
    try:
        mode = entry.stat().st_mode
    except OSError as exc:
        skipped.append(f"{entry.path}: {exc.strerror or type(exc).__name__}")
        return False
    return stat.S_ISDIR(mode) if kind == "dir" else stat.S_ISREG(mode)


class ImageFolderOptions(EpisodeOptions):
    """A folder of class sub-folders (``root``), the episode shape, and how images are decoded."""

    path_fields: ClassVar[tuple[str, ...]] = ("root",)
    root: str
    size: int = Field(default=28, ge=4, le=512, description="side in pixels images are resized to")
    channels: Literal[1, 3] = Field(default=1, description="1: grey-scale, 3: colour")

    @field_validator("root")
    @classmethod
    def _a_folder_of_classes(cls, root: str) -> str:
        try:
            scan(root)
        except FileNotFoundError as exc:
            raise ValueError(str(exc).removeprefix("imagefolder: ")) from None
        return root


class ImageFolder(EpisodeFamily):
    """Few-shot episodes of a user's images: a class is a sub-folder."""

    name = "imagefolder"
    Options = ImageFolderOptions

    @classmethod
    def key(cls, options: ImageFolderOptions) -> str:
        """``imagefolder-<folder>-<digest>-5w1s-q5``, with the augmentations and a non-default size or colour."""
        listing = scan(options.root)
        folder = re.sub(r"[^A-Za-z0-9_.]+", "_", listing.root.name)[:32] or "root"
        base = episode_key(f"{cls.name}-{folder}-{listing.digest(with_times=False)[:8]}", options)
        extras = ("" if options.size == 28 else f"-{options.size}px") + ("-rgb" if options.channels == 3 else "")
        return base + extras

    def __init__(self, *, root: str, ways: int = 5, shots: int = 1, queries: int = 5, rotations: bool = False,
                 jitter: bool = False, size: int = 28, channels: int = 1, cache_dir: str | Path | None = None,
                 context: int | None = None) -> None:
        listing = scan(root)
        self.root = listing.root
        digest = hashlib.sha256(f"{listing.digest(with_times=True)}:{size}:{channels}".encode()).hexdigest()[:16]
        data = cached("imagefolder", digest, lambda: decode(listing, size, channels), cache_dir)
        if listing.skipped:
            warnings.warn(f"imagefolder: {len(listing.skipped)} entries under {listing.root} could not be read and "
                          f"are left out (first: {listing.skipped[0]})", DataWarning, stacklevel=2)
        if data["unreadable"]:
            first = data["unreadable"][0]
            warnings.warn(f"imagefolder: {len(data['unreadable'])} unreadable image(s) left out (first: {first})",
                          DataWarning, stacklevel=2)
        counts = data["available"].sum(1)
        needed = shots + queries
        short = [i for i, n in enumerate(counts.tolist()) if n < needed]
        if short:
            example = data["classes"][short[0]]
            warnings.warn(f"imagefolder: {len(short)} of {len(counts)} classes have fewer than {needed} images "
                          f"(shots {shots} + queries {queries}) and are left out (e.g. {example}: "
                          f"{int(counts[short[0]])})", DataWarning, stacklevel=2)
        self.classes: list[str] = data["classes"]
        super().__init__(name=f"imagefolder {self.root}", images=data["images"], available=data["available"],
                         splits=data["split"], ways=ways, shots=shots, queries=queries, rotations=rotations,
                         jitter=jitter, context=context)

    @property
    def split_classes(self) -> dict[str, list[str]]:
        """The class folders each split draws from (disjoint)."""
        return {s: [self.classes[i] for i in pool.tolist()] for s, pool in self.pools.items()}


def decode(listing: Listing, size: int, channels: int) -> dict:
    """Every image of ``listing``, decoded in parallel: ``images`` uint8 ``[classes, most, C, size, size]`` and more."""
    mode = "L" if channels == 1 else "RGB"
    files = [path for _, _, paths in listing.classes for path in paths]

    def one(path: Path) -> torch.Tensor | str:
        try:
            return read_image(path, size, mode)
        except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for a damaged file
            return f"{path}: {type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # Pillow decodes without the GIL
        decoded = list(pool.map(one, files, chunksize=64))
    most = max(len(paths) for _, _, paths in listing.classes)
    images = torch.zeros(len(listing.classes), most, channels, size, size, dtype=torch.uint8)
    available = torch.zeros(len(listing.classes), most, dtype=torch.bool)
    unreadable: list[str] = []
    position = 0
    for c, (_, _, paths) in enumerate(listing.classes):
        slot = 0
        for _ in paths:
            image = decoded[position]
            position += 1
            if isinstance(image, str):
                unreadable.append(image)
                continue
            images[c, slot] = image.view(channels, size, size)
            available[c, slot] = True
            slot += 1
    names = [f"{split}/{name}" if split else name for split, name, _ in listing.classes]
    return {"format": FORMAT, "images": images, "available": available, "classes": names,
            "split": _split(listing), "split_seed": SPLIT_SEED, "unreadable": unreadable}


def _split(listing: Listing) -> dict[str, torch.Tensor]:
    """Class indices of each split: the folders' own, or a seeded 60/20/20 permutation of the classes."""
    if listing.split_layout:
        splits = [split for split, _, _ in listing.classes]
        return {s: torch.tensor([i for i, split in enumerate(splits) if split == s], dtype=torch.long)
                for s in SPLIT_FOLDERS}
    order = torch.randperm(len(listing.classes), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_train, n_val = (int(fraction * len(order)) for fraction in SPLIT_FRACTIONS)
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}
