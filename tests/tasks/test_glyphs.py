"""The glyphs family: episodes are well formed, splits never leak, the render cache is reused."""

from __future__ import annotations

import pytest
import torch

from metaopt.tasks import glyphs as glyphs_module
from metaopt.tasks.glyphs import STIX, Glyphs, load_glyphs


@pytest.fixture(scope="session")
def glyph_cache(tmp_path_factory):
    """One render for the session, in a private cache folder."""
    cache = tmp_path_factory.mktemp("glyph-cache")
    load_glyphs(cache)
    return cache


def test_dataset_has_the_expected_classes_and_fonts(glyph_cache):
    data = load_glyphs(glyph_cache)
    classes, fonts = data["available"].shape
    assert fonts == 16 and 1300 <= classes <= 1400
    assert (data["available"].sum(1) >= 12).all()
    assert sum(len(v) for v in data["split"].values()) == classes


def test_second_load_reuses_the_cache(glyph_cache, monkeypatch):
    def render_again(paths):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(glyphs_module, "render_dataset", render_again)
    assert load_glyphs(glyph_cache)["images"].shape[1] == 16


@pytest.mark.parametrize(("ways", "shots", "queries"), [(5, 1, 5), (20, 1, 5), (5, 5, 5)])
def test_episodes_have_distinct_classes_and_distinct_renderings(glyph_cache, ways, shots, queries):
    family = Glyphs(ways=ways, shots=shots, queries=queries, cache_dir=glyph_cache)
    classes, drawers = family.draw(8, "train", torch.Generator().manual_seed(0))
    assert classes.shape == (8, ways) and drawers.shape == (8, ways, shots + queries)
    for t in range(8):
        assert len(set(classes[t].tolist())) == ways
        for c in range(ways):
            assert len(set(drawers[t, c].tolist())) == shots + queries
            assert family.masks["train"][family.pools["train"] == classes[t, c]][0][drawers[t, c]].all()
    batch = family.sample(8, "train", torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (8, ways * shots, 1, 28, 28) and batch.query_x.shape == (8, ways * queries, 1, 28, 28)
    assert batch.support_y.dtype == torch.long and sorted(set(batch.query_y[0].tolist())) == list(range(ways))
    assert 0.0 <= batch.support_x.min() and batch.support_x.max() <= 1.0


def test_no_test_or_val_class_is_ever_seen_in_training(glyph_cache):
    family = Glyphs(cache_dir=glyph_cache)
    split = family.split_classes
    assert not split["train"] & split["test"] and not split["train"] & split["val"] and not split["val"] & split["test"]
    generator = torch.Generator().manual_seed(0)
    seen = {family.codepoints[i] for _ in range(20) for i in family.draw(25, "train", generator)[0].flatten().tolist()}
    assert seen <= split["train"]


def test_crossfont_trains_on_dejavu_and_tests_on_stix(glyph_cache):
    family = Glyphs(ways=5, shots=1, queries=3, domain="crossfont", cache_dir=glyph_cache)
    fonts = load_glyphs(glyph_cache)["fonts"]
    stix = torch.tensor([name in STIX for name in fonts])
    generator = torch.Generator().manual_seed(0)
    _, train_drawers = family.draw(10, "train", generator)
    _, test_drawers = family.draw(10, "test", generator)
    assert not stix[train_drawers].any() and stix[test_drawers].all()
    with pytest.raises(ValueError, match="at most 4 examples per class"):
        Glyphs(ways=5, shots=1, queries=5, domain="crossfont", cache_dir=glyph_cache)  # STIX has at most 4


def test_rotations_and_jitter_keep_shapes(glyph_cache):
    family = Glyphs(ways=5, shots=1, queries=2, rotations=True, jitter=True, cache_dir=glyph_cache)
    batch = family.sample(3, "val", torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (3, 5, 1, 28, 28) and torch.isfinite(batch.query_x).all()
