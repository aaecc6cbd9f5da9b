"""The text family: movie titles to genres, a pool per task, titles decoded back for a language model's prompt."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from metaopt.tasks import FAMILIES
from metaopt.tasks.movielens import GENRES

GENRE_OF = ["Action", "Comedy", "Drama", "Horror"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A GroupLens ``u.item`` of 120 invented titles, 30 a genre (some with a second genre outside the labels, one
    with two labelled genres: not in the family); ids 1..120, so 10 of each genre per split."""
    folder = tmp_path_factory.mktemp("ml")
    lines = []
    for item in range(1, 122):
        genres = {GENRE_OF[(item - 1) % 4]} if item <= 120 else {"Action", "Comedy"}
        if item % 7 == 0:
            genres.add("Romance")
        flags = "|".join("1" if g in genres else "0" for g in GENRES)
        lines.append(f"{item}|{GENRE_OF[(item - 1) % 4]} story number {item} (19{item % 90 + 10:02d})|01-Jan-1995||url|{flags}\n")
    (folder / "u.item").write_text("".join(lines), encoding="latin-1")
    return str(folder)


def _family(root, **options):
    family = FAMILIES["movie-genres"]
    return family.from_options(family.Options(root=root, **options))


def test_a_task_offers_a_balanced_pool_and_queries_whose_titles_decode_from_their_inputs(root):
    family = _family(root, pool=8, context=3, queries=4)
    assert len(family.titles) == 120 and family.input_shape == (256,) and family.n_way == 4
    batch = family.sample(5, "test", torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (5, 8, 256) and batch.query_x.shape == (5, 4, 256)
    assert torch.equal(batch.support_y.sort(1).values, torch.arange(4).repeat_interleave(2).expand(5, -1))
    for task in range(5):
        titles = family.decode(batch.support_x[task]) + family.decode(batch.query_x[task])
        labels = batch.support_y[task].tolist() + batch.query_y[task].tolist()
        assert all(title.startswith(GENRE_OF[label]) for title, label in zip(titles, labels, strict=True))
        assert all(int(title.split()[3]) % 3 == 2 for title in titles)  # the test split: ids 2 modulo 3
        assert len(set(titles)) == len(titles)
    with pytest.raises(ValueError, match="not the embedding of one of the family's titles"):
        family.decode(batch.support_x[0] + 0.5)


def test_bad_options_name_the_field_and_the_allowed_values(root):
    with pytest.raises(ValidationError, match="'Thriler' is not a MovieLens genre \\(allowed: .*Thriller"):
        _family(root, genres=["Action", "Thriler"])
    with pytest.raises(ValidationError, match="pool: 10 is not a multiple of the 4 genres"):
        _family(root, pool=10)
    with pytest.raises(ValidationError, match="context: 9 titles cannot be chosen from a pool of 8"):
        _family(root, pool=8, context=9)
    with pytest.raises(ValueError, match="the train split has 10 Action titles; a task needs 11 of each genre"):
        _family(root, pool=40, queries=4)
    with pytest.raises(FileNotFoundError, match="movielens100k.py"):
        _family(root + "-missing")
