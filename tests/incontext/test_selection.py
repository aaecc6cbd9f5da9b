"""The selection baselines choose distinct pool examples per query: at random, the nearest (KATE), spread out."""

from __future__ import annotations

import pytest
import torch

from metaopt.incontext.selection import diverse_context, gather_context, nearest_context, random_context


def test_random_contexts_are_distinct_per_query_and_follow_the_generator():
    pool, queries = torch.randn(3, 12, 2), torch.randn(3, 5, 2)
    picked = random_context(pool, queries, 4, torch.Generator().manual_seed(0))
    assert picked.shape == (3, 5, 4) and picked.min() >= 0 and picked.max() < 12
    assert all(len(set(row.tolist())) == 4 for row in picked.flatten(0, 1))
    assert torch.equal(picked, random_context(pool, queries, 4, torch.Generator().manual_seed(0)))
    assert not torch.equal(picked, random_context(pool, queries, 4, torch.Generator().manual_seed(1)))
    assert len({tuple(row.tolist()) for row in picked.flatten(0, 1)}) > 1  # each query its own draw


def test_nearest_contexts_are_the_k_nearest_with_the_nearest_last():
    pool = torch.arange(10.0).view(1, 10, 1)
    queries = torch.tensor([[[2.2], [8.9]]])
    picked = nearest_context(pool, queries, 3)
    assert picked.tolist() == [[[1, 3, 2], [7, 8, 9]]]
    images = torch.randn(2, 20, 1, 4, 4)  # any input shape: flattened
    query = images[:, :3] + 1e-3
    assert (nearest_context(images, query, 2)[..., -1] == torch.arange(3)).all()


def test_diverse_contexts_start_at_the_query_and_spread_over_the_pool():
    pool = torch.arange(10.0).view(1, 10, 1)
    picked = diverse_context(pool, torch.tensor([[[0.1]]]), 3)
    assert picked.tolist() == [[[4, 9, 0]]]  # 0 nearest the query (last), then 9 farthest, then the middle
    many = diverse_context(torch.randn(2, 15, 3), torch.randn(2, 4, 3), 15)  # the whole pool, each once
    assert all(sorted(row.tolist()) == list(range(15)) for row in many.flatten(0, 1))


def test_the_chosen_examples_are_gathered_per_query():
    pool_y = torch.arange(2 * 6 * 3.0).view(2, 6, 3)
    indices = torch.tensor([[[0, 5], [1, 1]], [[2, 3], [4, 0]]])
    got = gather_context(pool_y, indices)
    assert got.shape == (2, 2, 2, 3)
    assert torch.equal(got[1, 0, 1], pool_y[1, 3]) and torch.equal(got[0, 0, 1], pool_y[0, 5])


@pytest.mark.parametrize("k", [0, 7])
def test_a_context_larger_than_the_pool_is_one_line(k):
    with pytest.raises(ValueError, match=r"^context: .* pool of 6 \(allowed: 1 to 6\)$"):
        nearest_context(torch.randn(1, 6, 2), torch.randn(1, 1, 2), k)
