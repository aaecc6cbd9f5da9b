"""`benchmarks/fewshot_table.py` runs on a directory in Omniglot's layout and prints the published numbers beside ours."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _omniglot(root: Path) -> Path:
    """132 characters (enough for every split at 5 ways), 20 drawings each, in torchvision's layout."""
    generator = torch.Generator().manual_seed(0)
    for part, alphabets in (("images_background", 8), ("images_evaluation", 3)):
        for a in range(alphabets):
            for c in range(12):
                folder = root / part / f"alphabet{a}" / f"character{c + 1:02d}"
                folder.mkdir(parents=True)
                row, col = (int(torch.randint(10, 90, (1,), generator=generator)) for _ in range(2))
                for d in range(20):
                    pixels = torch.full((105, 105), 255, dtype=torch.uint8)
                    pixels[row : row + 6, min(col, 60) : min(col, 60) + 35] = 0
                    Image.fromarray(pixels.numpy(), "L").save(folder / f"{c:04d}_{d + 1:02d}.png")
    return root


def test_fewshot_table_on_an_omniglot_directory_prints_published_numbers(tmp_path):
    root = _omniglot(tmp_path / "omniglot")
    done = subprocess.run(
        [sys.executable, "benchmarks/fewshot_table.py", "--family", "omniglot", "--root", str(root), "--methods",
         "protonet", "--settings", "5w1s", "--train-episodes", "10", "--workers", "1", "--json",
         str(tmp_path / "out.json")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
             "TORCH_EXTENSIONS_DIR": os.environ["TORCH_EXTENSIONS_DIR"]},  # the kernels' one build (conftest.py)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    ours = next(i for i, line in enumerate(lines) if line.startswith("protonet "))
    assert "±" in lines[ours] and lines[ours + 1].split() == ["published", "98.8"]
    assert (tmp_path / "out.json").is_file()
