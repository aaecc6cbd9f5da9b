"""The imagefolder family: both layouts, a key per folder, the cache, and each kind of bad data."""

from __future__ import annotations

import os
import time
import warnings

import pytest
import torch

from metaopt.search.config import ConfigError
from metaopt.search.job import load_job_data
from metaopt.tasks import ImageFolder
from metaopt.tasks.base import DataWarning
from tests.own_data import draw_shapes


def _family(root, cache, **options) -> ImageFolder:
    return ImageFolder(root=str(root), cache_dir=cache, **options)


def test_a_flat_folder_splits_its_classes_60_20_20_and_samples_episodes(tmp_path):
    root = draw_shapes(tmp_path / "shapes")
    family = _family(root, tmp_path / "cache", ways=5, shots=1, queries=5)
    splits = family.split_classes
    assert [len(splits[s]) for s in ("train", "val", "test")] == [15, 5, 5]
    assert not set(splits["train"]) & set(splits["val"]) and not set(splits["val"]) & set(splits["test"])
    batch = family.sample(3, "val", torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (3, 5, 1, 28, 28) and batch.query_y.shape == (3, 25)
    assert 0.0 <= float(batch.support_x.min()) and float(batch.support_x.max()) <= 1.0
    again = _family(root, tmp_path / "cache", ways=5, shots=1, queries=5)
    assert again.split_classes == splits  # the split is recorded with the cached images
    colour = _family(root, tmp_path / "cache", size=16, channels=3)
    assert colour.input_shape == (3, 16, 16)


def test_the_split_layout_keeps_its_folders(tmp_path):
    root = draw_shapes(tmp_path / "split", split_layout=True)
    family = _family(root, tmp_path / "cache")
    assert all(name.startswith("train/") for name in family.split_classes["train"])
    assert {name.split("/")[0] for name in family.split_classes["test"]} == {"test"}


def test_two_folders_never_share_a_key_and_a_changed_file_decodes_anew(tmp_path):
    one = draw_shapes(tmp_path / "one")
    two = draw_shapes(tmp_path / "two", seed=1)
    (two / "circle-filled" / "000.jpg").unlink()
    key = lambda root: ImageFolder.key(ImageFolder.Options(root=str(root)))  # noqa: E731
    assert key(one) != key(two) and key(one).startswith("imagefolder-one-") and key(one).endswith("-5w1s-q5")
    cache = tmp_path / "cache"
    before = _family(one, cache).images.clone()
    target = one / "square-filled" / "001.png"
    from PIL import Image

    Image.new("L", (32, 32), 255).save(target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    after = _family(one, cache).images
    assert len(list(cache.glob("*.pt"))) == 2 and not torch.equal(before, after)


def test_an_unreadable_image_and_a_short_class_are_left_out_with_one_counted_warning_each(tmp_path):
    root = draw_shapes(tmp_path / "shapes", classes=30)
    (root / "circle-filled" / "000.jpg").write_bytes(b"not an image")
    short = root / "square-filled"
    for path in sorted(short.iterdir())[3:]:
        path.unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        family = _family(root, tmp_path / "cache")
    messages = [str(w.message) for w in caught if w.category is DataWarning]
    assert len(messages) == 2
    assert "1 unreadable image(s) left out" in messages[0] and "circle-filled/000.jpg" in messages[0]
    assert messages[1].startswith("imagefolder: 1 of 30 classes have fewer than 6 images") and "square-filled" in messages[1]
    assert "square-filled" not in {c for pool in family.split_classes.values() for c in pool}


@pytest.mark.parametrize("make, expected", [
    (lambda root: (root / "val").rename(root / "validation"), "val not found"),
    (lambda root: None, "need 5"),
])
def test_a_missing_split_folder_or_too_few_classes_is_one_line(tmp_path, make, expected):
    if expected == "need 5":
        root = draw_shapes(tmp_path / "few", classes=10)  # 6 / 2 / 2 classes: no 5-way val episode
        with pytest.raises(ValueError, match=expected) as info:
            _family(root, tmp_path / "cache")
    else:
        root = draw_shapes(tmp_path / "split", split_layout=True)
        make(root)
        with pytest.raises(ConfigError, match=expected) as info:
            load_job_data({"name": "x", "family": {"name": "imagefolder", "root": str(root)}, "methods": ["protonet"],
                           "budget": {"trials": 1, "meta_iterations": 1, "eval_interval": 1}}, tmp_path / "job.yaml")
        assert str(info.value).startswith(f"{tmp_path / 'job.yaml'}: family.root: ")
    assert "\n" not in str(info.value)


def test_a_relative_root_in_a_job_file_is_relative_to_the_job(tmp_path):
    draw_shapes(tmp_path / "data" / "shapes")
    (tmp_path / "jobs").mkdir()
    loaded = load_job_data({"name": "x", "family": {"name": "imagefolder", "root": "../data/shapes"},
                            "methods": ["protonet"], "budget": {"trials": 1, "meta_iterations": 1, "eval_interval": 1}},
                           tmp_path / "jobs" / "job.yaml")
    assert loaded.job.family.options.root == str((tmp_path / "data" / "shapes").resolve())


@pytest.mark.parametrize("damage", [
    lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),  # truncated
    lambda path: path.write_bytes(b"\x00" * 1000),  # overwritten
    lambda path: torch.save({"images": torch.zeros(1)}, path),  # another file of the same name
    lambda path: torch.save([1, 2, 3], path),
    lambda path: path.with_suffix(".sha256").unlink(),  # its checksum gone
])
def test_a_damaged_or_foreign_file_in_the_data_cache_is_built_again_with_a_warning(damage, tmp_path):
    root = draw_shapes(tmp_path / "shapes")
    cache = tmp_path / "cache"
    before = _family(root, cache).images.clone()
    (cached,) = cache.glob("*.pt")
    damage(cached)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        again = _family(root, cache).images
    messages = [str(w.message) for w in caught if w.category is DataWarning]
    assert len(messages) == 1 and messages[0].startswith(f"{cached}: a damaged or foreign file in metaopt's data "
                                                         "cache (") and messages[0].endswith("built again")
    assert torch.equal(before, again)
    with warnings.catch_warnings(record=True) as caught:  # and the rebuilt file is whole
        warnings.simplefilter("always", DataWarning)
        assert torch.equal(_family(root, cache).images, before)
    assert not [w for w in caught if w.category is DataWarning]


def test_entries_that_cannot_be_read_or_named_are_left_out_with_one_counted_warning(tmp_path):
    root = draw_shapes(tmp_path / "shapes")
    (root / "loop").symlink_to(root / "loop")  # a class folder that is a symlink loop
    (root / "circle-filled" / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a dangling image link
    (root / "circle-filled" / "self.png").symlink_to(root / "circle-filled" / "self.png")  # an image link loop
    odd = os.fsencode(root / "square-filled") + b"/caf\xe9.png"  # Latin-1 bytes in a name: not UTF-8
    with open(odd, "wb") as f:
        f.write((root / "square-filled" / "000.jpg").read_bytes())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        family = _family(root, tmp_path / "cache", ways=5, shots=1, queries=5)
    messages = [str(w.message) for w in caught if w.category is DataWarning]
    assert len(messages) == 1 and messages[0].startswith(f"imagefolder: 4 entries under {root} could not be read and "
                                                         "are left out (first: "), messages
    assert len(family.classes) == 25  # every class is still there, with the images that could be read
    looped = tmp_path / "looped"
    looped.symlink_to(looped)
    with pytest.raises(ConfigError, match=r"family.root: .*looped: cannot be read \(Symlink loop"):
        load_job_data({"name": "t", "family": {"name": "imagefolder", "root": str(looped)}, "methods": ["protonet"],
                       "budget": {"trials": 1, "meta_iterations": 1, "eval_interval": 1}}, tmp_path / "job.yaml")
