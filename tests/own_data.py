"""A user's own data, generated: folders of drawn shapes, tables of per-task linear and classification data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "diamond")
STYLES = ("filled", "outline", "thick", "small", "barred", "dotted")


def draw_shapes(root: Path, *, per_class: int = 12, classes: int = 25, split_layout: bool = False,
                seed: int = 0) -> Path:
    """``classes`` shape classes (shape x style) of ``per_class`` 32x32 images, PNG and JPEG alternately.

    ``split_layout``: the first 15 classes under ``train/``, 5 under ``val/``, 5 under ``test/``.
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    kinds = [(s, st) for st in STYLES for s in SHAPES][:classes]
    for index, (shape, style) in enumerate(kinds):
        folder = root / f"{shape}-{style}"
        if split_layout:
            folder = root / ("train" if index < 15 else "val" if index < 20 else "test") / f"{shape}-{style}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.new("L", (32, 32), 0)
            draw = ImageDraw.Draw(image)
            cx, cy = 16 + rng.integers(-3, 4, 2)
            r = 5 if style == "small" else 8 + int(rng.integers(-2, 3))
            width = {"outline": 1, "thick": 3, "barred": 1}.get(style, 0)
            fill = 255 if width == 0 else None
            box = [cx - r, cy - r, cx + r, cy + r]
            if shape == "circle":
                draw.ellipse(box, fill=fill, outline=255, width=max(width, 1))
            elif shape == "square":
                draw.rectangle(box, fill=fill, outline=255, width=max(width, 1))
            elif shape == "triangle":
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill, outline=255,
                             width=max(width, 1))
            elif shape == "cross":
                draw.line(box, fill=255, width=max(width, 2))
                draw.line([box[0], box[3], box[2], box[1]], fill=255, width=max(width, 2))
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy), (cx, cy + r), (cx + r, cy)], fill=fill, outline=255,
                             width=max(width, 1))
            if style == "barred":
                draw.rectangle([2, 28, 30, 30], fill=255)
            if style == "dotted":
                draw.ellipse([1, 1, 6, 6], fill=255)
            image.save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


def linear_rows(tasks: int = 60, rows: int = 30, *, features: int = 3, noise: float = 0.1, seed: int = 0) -> dict:
    """Per-task linear regression: task t's rows have y = x . a_t + b_t + noise, a_t ~ N(2, 1) (a shared mean)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {"user": [], **{f"x{j}": [] for j in range(features)}, "y": []}
    for t in range(tasks):
        a, b = rng.normal(2.0, 1.0, features), rng.normal()
        x = rng.normal(size=(rows, features))
        y = x @ a + b + noise * rng.normal(size=rows)
        columns["user"] += [f"user{t:03d}"] * rows
        for j in range(features):
            columns[f"x{j}"] += x[:, j].tolist()
        columns["y"] += y.tolist()
    return columns


def class_rows(tasks: int = 60, rows: int = 30, *, seed: int = 0) -> dict:
    """Per-task classification: 3 classes, each task's class centres shifted by its own offset."""
    rng = np.random.default_rng(seed)
    centres = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    columns: dict[str, list] = {"site": [], "f0": [], "f1": [], "label": []}
    for t in range(tasks):
        offset = rng.normal(0, 2.0, 2)
        labels = rng.integers(0, 3, rows)
        x = centres[labels] + offset + 0.5 * rng.normal(size=(rows, 2))
        columns["site"] += [f"site{t}"] * rows
        columns["f0"] += x[:, 0].tolist()
        columns["f1"] += x[:, 1].tolist()
        columns["label"] += [["a", "b", "c"][k] for k in labels]
    return columns


def write_table(columns: dict, path: Path) -> Path:
    """``columns`` as a CSV or Parquet file, by the suffix of ``path``."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    table = pa.table(columns)
    if path.suffix == ".csv":
        pcsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path
