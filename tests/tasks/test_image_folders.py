"""Omniglot and miniImageNet readers on fixtures generated in their exact directory layouts."""

from __future__ import annotations

import csv

import pytest
import torch
from PIL import Image

from metaopt.search import ConfigError, load_job
from metaopt.tasks import MiniImageNet, Omniglot
from tests.search.jobs import tiny_job, write_job


@pytest.fixture
def omniglot_root(tmp_path):
    """30 characters in two alphabets per part, 20 drawings each, black strokes on white, 105x105."""
    generator = torch.Generator().manual_seed(0)
    for part, alphabets in (("images_background", ("Alpha", "Beta")), ("images_evaluation", ("Gamma",))):
        for alphabet in alphabets:
            for c in range(10):
                folder = tmp_path / "omniglot" / part / alphabet / f"character{c + 1:02d}"
                folder.mkdir(parents=True)
                for d in range(20):
                    pixels = torch.full((105, 105), 255, dtype=torch.uint8)
                    row = int(torch.randint(10, 95, (1,), generator=generator))
                    pixels[row : row + 5, 10:95] = 0  # a stroke
                    Image.fromarray(pixels.numpy(), "L").save(folder / f"{c:04d}_{d + 1:02d}.png")
    return tmp_path / "omniglot"


@pytest.fixture
def mini_root(tmp_path):
    """9 classes (4 train, 2 val, 3 test), 6 colour images each, in Ravi & Larochelle's CSV layout."""
    root = tmp_path / "mini"
    (root / "images").mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for split, classes in (("train", ["n01", "n02", "n03", "n04"]), ("val", ["n05", "n06"]), ("test", ["n07", "n08", "n09"])):
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            for label in classes:
                for i in range(6):
                    name = f"{label}{i:08d}.jpg"
                    pixels = torch.randint(0, 256, (90, 120, 3), generator=generator, dtype=torch.uint8)
                    Image.fromarray(pixels.numpy(), "RGB").save(root / "images" / name)
                    writer.writerow([name, label])
    return root


def test_omniglot_reads_the_layout_inverts_and_splits_disjointly(omniglot_root, tmp_path):
    family = Omniglot(root=str(omniglot_root), ways=2, shots=1, queries=3, cache_dir=tmp_path / "cache")
    assert family.images.shape == (30, 20, 1, 28, 28) and family.input_shape == (1, 28, 28)
    assert family.images.float().mean() < 64  # white strokes on a black background
    pools = {s: set(p.tolist()) for s, p in family.pools.items()}
    assert not pools["train"] & pools["test"] and not pools["train"] & pools["val"]
    assert sum(len(p) for p in pools.values()) == 30
    batch = family.sample(3, "test", torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (3, 2, 1, 28, 28) and batch.query_y.shape == (3, 6)

    def render_again():
        raise AssertionError("read the images again instead of the cache")

    import metaopt.tasks.image_folders as folders

    original = folders.read_image
    folders.read_image = lambda *a: render_again()
    try:
        Omniglot(root=str(omniglot_root), ways=2, shots=1, queries=3, cache_dir=tmp_path / "cache")
    finally:
        folders.read_image = original


def test_miniimagenet_reads_csv_splits_at_84_pixels(mini_root, tmp_path):
    family = MiniImageNet(root=str(mini_root), ways=2, shots=1, queries=5, cache_dir=tmp_path / "cache")
    assert family.images.shape == (9, 6, 3, 84, 84) and family.input_shape == (3, 84, 84)
    assert {s: len(p) for s, p in family.pools.items()} == {"train": 4, "val": 2, "test": 3}
    batch = family.sample(2, "val", torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (2, 2, 3, 84, 84) and batch.query_x.shape == (2, 10, 3, 84, 84)
    assert family.classes[4:6] == ["n05", "n06"]


@pytest.mark.parametrize("family", ["omniglot", "miniimagenet"])
def test_a_missing_dataset_directory_is_a_one_line_job_error(family, tmp_path):
    path = write_job(tmp_path, tiny_job(family={"name": family, "root": str(tmp_path / "nowhere"), "ways": 5}))
    with pytest.raises(ConfigError, match=rf"family: {family}: .*nowhere.* not found"):
        load_job(path)
    path = write_job(tmp_path, tiny_job(family={"name": family, "ways": 5}), name="noroot.yaml")
    with pytest.raises(ConfigError, match="set family.root"):
        load_job(path)
