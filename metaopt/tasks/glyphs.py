"""Glyphs: an offline Omniglot-like benchmark rendered from the fonts inside matplotlib's package data.

A character (Unicode letters: categories Lu, Ll, Lo) is a class; each font is one
"drawer" (Omniglot has 20 drawers per character): DejaVu Sans, Serif and Sans Mono
in four styles each, and STIX General in four styles, 16 in all. Characters that at
least 12 fonts cover are kept (1,356 classes on matplotlib 3.11), rendered at 28x28
grey-scale (white ink on black), split 60/20/20 by a seeded permutation of the
classes, and cached as one tensor file under the user's cache directory; the file's
name is a digest of the fonts' bytes and the render settings, so new fonts render
anew. Optional augmentation as usual for Omniglot: rotations by multiples of 90
degrees as new classes, and small random affine jitter.

``domain="crossfont"`` (the ``glyphs-crossfont`` family) meta-trains on the DejaVu
renderings and validates/tests on the STIX renderings of held-out classes only.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from typing import Literal

import torch

from metaopt.tasks.cache import cached
from metaopt.tasks.episodes import EpisodeFamily

DEJAVU = [f"DejaVu{family}{style}" for family in ("Sans", "Serif", "SansMono") for style in
          ("", "-Bold", "-Oblique" if family != "Serif" else "-Italic",
           "-BoldOblique" if family != "Serif" else "-BoldItalic")]
STIX = ["STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta"]
FONTS = DEJAVU + STIX
CATEGORIES = ("Lu", "Ll", "Lo")
MIN_FONTS = 12
SIZE = 28
RENDER_CANVAS, RENDER_POINTS = 56, 40  # drawn at 2x, averaged down to 28x28
SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
FORMAT = 1


def font_dir() -> Path:
    """Where matplotlib keeps its TrueType fonts."""
    import matplotlib

    return Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256(f"{FORMAT}:{SIZE}:{RENDER_CANVAS}:{RENDER_POINTS}:{MIN_FONTS}:{SPLIT_SEED}".encode())
    for path in paths:
        h.update(path.name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def render_dataset(paths: list[Path]) -> dict:
    """Render every kept character in every font: ``images`` uint8 [classes, fonts, 28, 28] and metadata."""
    from fontTools.ttLib import TTFont
    from PIL import Image, ImageDraw, ImageFont

    cmaps = [set(TTFont(str(p)).getBestCmap()) for p in paths]
    counts: dict[int, int] = {}
    for cmap in cmaps:
        for cp in cmap:
            if unicodedata.category(chr(cp)) in CATEGORIES:
                counts[cp] = counts.get(cp, 0) + 1
    codepoints = sorted(cp for cp, n in counts.items() if n >= MIN_FONTS)
    images = torch.zeros(len(codepoints), len(paths), SIZE, SIZE, dtype=torch.uint8)
    available = torch.zeros(len(codepoints), len(paths), dtype=torch.bool)
    for f, (path, cmap) in enumerate(zip(paths, cmaps)):
        font = ImageFont.truetype(str(path), RENDER_POINTS)
        for c, cp in enumerate(codepoints):
            if cp not in cmap:
                continue
            canvas = Image.new("L", (RENDER_CANVAS, RENDER_CANVAS), 0)
            left, top, right, bottom = font.getbbox(chr(cp))
            x = (RENDER_CANVAS - (right - left)) / 2 - left
            y = (RENDER_CANVAS - (bottom - top)) / 2 - top
            ImageDraw.Draw(canvas).text((x, y), chr(cp), fill=255, font=font)
            small = canvas.resize((SIZE, SIZE), Image.Resampling.BOX)
            pixels = torch.frombuffer(bytearray(small.tobytes()), dtype=torch.uint8).view(SIZE, SIZE)
            if pixels.any():  # a font may map a letter to an empty glyph
                images[c, f], available[c, f] = pixels, True
    keep = available.sum(1) >= MIN_FONTS
    order = torch.randperm(int(keep.sum()), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_train, n_val = (int(fr * len(order)) for fr in SPLIT_FRACTIONS[:2])
    return {
        "format": FORMAT,
        "images": images[keep],
        "available": available[keep],
        "codepoints": [cp for cp, k in zip(codepoints, keep.tolist()) if k],
        "fonts": [p.stem for p in paths],
        "split": {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]},
        "split_seed": SPLIT_SEED,
    }


def load_glyphs(cache_dir: str | Path | None = None) -> dict:
    """The rendered dataset, from the cache when its digest matches, else rendered and cached."""
    paths = [font_dir() / f"{name}.ttf" for name in FONTS]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"glyphs: matplotlib font not found: {missing[0]}")
    return cached("glyphs", _digest(paths), lambda: render_dataset(paths), cache_dir)


class Glyphs(EpisodeFamily):
    """N-way K-shot episodes of rendered characters, Q queries per class."""

    name = "glyphs"

    def __init__(
        self,
        *,
        ways: int = 5,
        shots: int = 1,
        queries: int = 5,
        rotations: bool = False,
        jitter: bool = False,
        domain: Literal["standard", "crossfont"] = "standard",
        cache_dir: str | Path | None = None,
        context: int | None = None,
    ) -> None:
        data = load_glyphs(cache_dir)
        self.domain = domain
        self.codepoints = data["codepoints"]
        split_masks = None
        if domain == "crossfont":
            dejavu = torch.tensor([name.startswith("DejaVu") for name in data["fonts"]])
            split_masks = {"train": dejavu, "val": ~dejavu, "test": ~dejavu}
        super().__init__(
            name=f"glyphs ({domain})", images=data["images"], available=data["available"], splits=data["split"],
            ways=ways, shots=shots, queries=queries, rotations=rotations, jitter=jitter, split_masks=split_masks,
            context=context,
        )

    @property
    def split_classes(self) -> dict[str, set[int]]:
        """The code points each split draws from (disjoint)."""
        return {s: {self.codepoints[i] for i in pool.tolist()} for s, pool in self.pools.items()}


class GlyphsCrossFont(Glyphs):
    """Meta-train on DejaVu renderings, meta-test on STIX renderings of held-out classes."""

    name = "glyphs-crossfont"

    def __init__(self, **kwargs) -> None:  # noqa: ANN003 - Glyphs' keyword arguments
        super().__init__(domain="crossfont", **kwargs)
