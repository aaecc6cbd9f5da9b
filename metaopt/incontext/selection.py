"""The selection baselines: which ``k`` of a task's pool of ``N`` labelled examples a frozen in-context model sees
for each query — at random, the nearest to the query (KATE: Liu et al. 2022), or spread out (farthest-point).

Every function takes a batch of tasks, ``pool_x [tasks, N, ...]`` and ``query_x [tasks, Q, ...]`` (inputs, or their
embeddings), and returns indices into the pool, ``[tasks, Q, k]``, distinct within each query's context and in the
order a prompt would show them: the most relevant last, nearest the query (KATE's reversed order). A model that
reads its context as a set (``icl``, the neural processes) ignores the order.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(pool: Tensor, queries: Tensor, k: int) -> None:
    if not 0 < k <= pool.shape[1]:
        raise ValueError(f"context: {k} examples cannot be chosen from a pool of {pool.shape[1]} (allowed: 1 to "
                         f"{pool.shape[1]})")
    if pool.shape[0] != queries.shape[0]:
        raise ValueError(f"pool and queries of different task counts ({pool.shape[0]} and {queries.shape[0]})")


def distances(pool: Tensor, queries: Tensor) -> Tensor:
    """Euclidean distance of every query to every pool example, inputs flattened: ``[tasks, Q, N]``."""
    return torch.cdist(queries.flatten(2).double(), pool.flatten(2).double())


def random_context(pool: Tensor, queries: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` pool examples drawn uniformly without replacement for each query."""
    _check(pool, queries, k)
    tasks, q, n = pool.shape[0], queries.shape[1], pool.shape[1]
    return torch.rand(tasks, q, n, generator=generator).argsort(-1)[..., :k]


def nearest_context(pool: Tensor, queries: Tensor, k: int) -> Tensor:
    """The ``k`` pool examples nearest each query (KATE), the nearest last."""
    _check(pool, queries, k)
    return distances(pool, queries).topk(k, dim=-1, largest=False).indices.flip(-1)


def diverse_context(pool: Tensor, queries: Tensor, k: int) -> Tensor:
    """Farthest-point selection for each query: its nearest pool example, then again and again the example farthest
    from those already chosen (spread over the pool, anchored at the query); the nearest to the query last."""
    _check(pool, queries, k)
    flat = pool.flatten(2).double()
    between = torch.cdist(flat, flat)  # [tasks, N, N]
    chosen = [distances(pool, queries).argmin(-1)]  # [tasks, Q]
    gathered = torch.gather(between.unsqueeze(1).expand(-1, queries.shape[1], -1, -1), 2,
                            chosen[0][..., None, None].expand(-1, -1, 1, pool.shape[1])).squeeze(2)
    nearest_chosen = gathered  # [tasks, Q, N]: each example's distance to the closest chosen one
    for _ in range(k - 1):
        nearest_chosen = nearest_chosen.clone()
        for index in chosen:  # never again
            nearest_chosen.scatter_(-1, index[..., None], -1.0)
        pick = nearest_chosen.argmax(-1)
        chosen.append(pick)
        row = torch.gather(between.unsqueeze(1).expand(-1, queries.shape[1], -1, -1), 2,
                           pick[..., None, None].expand(-1, -1, 1, pool.shape[1])).squeeze(2)
        nearest_chosen = torch.minimum(nearest_chosen, row)
    return torch.stack(chosen[::-1], -1)


def gather_context(pool: Tensor, indices: Tensor) -> Tensor:
    """The chosen examples of each query's context: ``pool [tasks, N, ...]`` at ``indices [tasks, Q, k]`` →
    ``[tasks, Q, k, ...]``."""
    tasks, q, k = indices.shape
    expanded = pool.unsqueeze(1).expand(tasks, q, *pool.shape[1:])
    index = indices.view(tasks, q, k, *([1] * (pool.dim() - 2))).expand(tasks, q, k, *pool.shape[2:])
    return torch.gather(expanded, 2, index)
