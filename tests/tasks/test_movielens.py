"""``movielens``: both file layouts, MeLU's user and item splits, padded support sets, MAE and nDCG@3, MeLU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from metaopt.learners.checkpoint import build_learner
from metaopt.learners.core import rating_loss
from metaopt.search.evaluation import score_tasks
from metaopt.search.fit import fit
from metaopt.tasks.movielens import GENRES, SCENARIOS, MovieLens, mae, ndcg_at_3, read_ratings

OCCUPATIONS = ("artist", "doctor", "engineer", "student", "writer")


def write_movielens(root: Path, layout: str, users: int = 80, items: int = 90, seed: int = 0) -> Path:
    """A small MovieLens-like data set (13 to 60 ratings a user, movies of 1994-1998) in ``layout``."""
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    taste = torch.randn(users, 3, generator=g)
    kind = torch.randn(items, 3, generator=g)
    years = [1994 + int(v) for v in torch.randint(0, 5, (items,), generator=g)]  # 1997, 1998: new
    genres = [[GENRES[1 + int(v)] for v in torch.randperm(18, generator=g)[: 1 + i % 3]] for i in range(items)]
    inter, time = [], 880000000
    for u in range(users):
        count = 13 + int(torch.randint(0, 48, (), generator=g))
        for m in torch.randperm(items, generator=g)[:count].tolist():
            rating = min(5, max(1, round(3 + float(taste[u] @ kind[m]))))
            time += 1
            inter.append((u + 1, m + 1, rating, time))
    ages = [15 + 3 * (u % 15) for u in range(users)]
    if layout == "grouplens":
        (root / "u.data").write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in inter))
        (root / "u.user").write_text("".join(f"{u + 1}|{ages[u]}|{'MF'[u % 2]}|{OCCUPATIONS[u % 5]}|0000{u}\n"
                                             for u in range(users)))
        lines = []
        for m in range(items):
            flags = "|".join("1" if g_ in genres[m] else "0" for g_ in GENRES)
            lines.append(f"{m + 1}|Fílm {m} ({years[m]})|01-Jan-{years[m]}||http://x|{flags}\n")
        (root / "u.item").write_bytes("".join(lines).encode("latin-1"))
    else:
        (root / "ml.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                       + "".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in inter))
        (root / "ml.user").write_text("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
                                      + "".join(f"{u + 1}\t{ages[u]}\t{'MF'[u % 2]}\t{OCCUPATIONS[u % 5]}\t0\n"
                                                for u in range(users)))
        (root / "ml.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                      + "".join(f"{m + 1}\tFilm {m}\t{years[m]}\t{' '.join(genres[m])}\n"
                                                for m in range(items)))
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_movielens(tmp_path_factory.mktemp("ml") / "grouplens", "grouplens")


def test_both_layouts_read_the_same_ratings_and_features(tmp_path, root):
    a, b = read_ratings(root), read_ratings(write_movielens(tmp_path / "recbole", "recbole"))
    for field in ("user", "item", "rating", "time", "user_features", "item_year", "item_genres"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.item_year.min() == 1994 and a.item_genres.sum(1).min() >= 1


def test_a_folder_without_the_files_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds neither u.data .GroupLens. nor a .inter file .RecBole."):
        MovieLens(root=str(tmp_path))
    (tmp_path / "u.data").write_text("1\t1\t5\t0\n")
    with pytest.raises(FileNotFoundError, match="has u.data but not u.user, u.item"):
        MovieLens(root=str(tmp_path))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_test_rating_is_trained_on_and_new_users_are_never_seen(root, scenario):
    family = MovieLens(root=str(root), scenario=scenario)
    train, test = family.tables["train"], family.tables["test"]
    trained = set(train.index[train.index >= 0].tolist())
    test_users = set(family.data.user[test.index[:, 0]].tolist())
    if scenario == "existing":  # the test side's queries: each user's held-out last ratings
        queries = {int(r) for i, n in zip(test.index, test.count) for r in i[n - family.queries: n]}
        assert queries.isdisjoint(trained)
    else:
        tested = set(test.index[test.index >= 0].tolist())
        assert tested.isdisjoint(trained)
    if scenario.startswith("new-") and scenario != "new-items":
        assert test_users.isdisjoint(set(family.data.user[train.index[:, 0]].tolist()))
    new = family.data.item_year[family.data.item] >= 1997
    assert not new[list(trained)].any()  # training sees existing items only


def test_support_sets_are_padded_with_missing_ratings_the_loss_leaves_out(root):
    family = MovieLens(root=str(root), scenario="new-users")
    batch = family.sample(6, "train", torch.Generator().manual_seed(0))
    assert batch.query_y.shape == (6, 10, 1) and not torch.isnan(batch.query_y).any()
    known = ~torch.isnan(batch.support_y[..., 0])
    counts = known.sum(1)
    assert counts.min() >= 1 and (counts < batch.support_y.shape[1]).any()  # users differ: some padding
    assert (batch.support_x[~known] == 0).all()
    pred = torch.randn(batch.support_y.shape)
    first = known[0]
    assert torch.allclose(rating_loss(pred[0], batch.support_y[0]),
                          ((pred[0][first] - batch.support_y[0][first]) ** 2).mean())
    shots = MovieLens(root=str(root), scenario="new-users", shots=3).sample(4, "val", torch.Generator())
    assert shots.support_y.shape == (4, 3, 1) and not torch.isnan(shots.support_y).any()


def test_mae_and_ndcg_at_3_of_each_user():
    ratings = torch.tensor([[5.0, 3.0, 1.0, 4.0]])[..., None]
    perfect, reversed_ = ratings.clone(), -ratings
    assert ndcg_at_3(perfect, ratings).item() == pytest.approx(1.0)
    ideal = 31 + 15 / math.log2(3) + 7 / 2
    worst = 1 + 7 / math.log2(3) + 15 / 2  # ranked 1, 3, 4: gains 1, 7, 15
    assert ndcg_at_3(reversed_, ratings).item() == pytest.approx(worst / ideal)
    assert mae(ratings + 0.5, ratings).item() == pytest.approx(0.5)


def test_melu_adapts_the_decision_layers_only_and_the_baselines_score_mae(root):
    family = MovieLens(root=str(root), scenario="new-users")
    test = family.fixed_tasks(20, "test", seed=0)
    kwargs = dict(backbone={"name": "melu", "embedding": 8, "hidden": [16, 16]}, task_kind="rating",
                  input_shape=family.input_shape, output_size=1)
    torch.manual_seed(0)
    melu = build_learner("melu", {"inner_lr": 0.05, "meta_batch": 8}, **kwargs)
    fit(melu, family, iterations=5, generator=torch.Generator().manual_seed(0))
    batch = test[0]
    adapted = melu.adapt(batch.support_x[0], batch.support_y[0]).params
    for name, value in melu.params.items():
        assert torch.equal(adapted[name], value) == (not name.startswith("decision.")), name
    scores = {}
    for method, hparams in [("melu", {"inner_lr": 0.05, "meta_batch": 8}), ("global_mean", {}), ("user_mean", {}),
                            ("item_mean", {}), ("scratch", {"steps": 5}), ("pretrain", {"adapt_steps": 5})]:
        learner = build_learner(method, hparams, **kwargs)
        fit(learner, family, iterations=5, generator=torch.Generator().manual_seed(0))
        scores[method] = score_tasks(learner, family, test)
        assert set(scores[method]) == {"mae", "ndcg3"} and math.isfinite(scores[method]["mae"].mean().item())
    assert scores["global_mean"]["mae"].mean() < 2.0
