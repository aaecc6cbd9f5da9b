"""A trial's process keeps freed activation memory in the heap (glibc): a block of a few MB is not a fresh mapping; and
while it trains, what it held after its first step is left out of Python's full collections."""

from __future__ import annotations

import ctypes
import gc
import platform
import weakref

import pytest

import torch

from metaopt.allocator import keep_freed_memory, long_lived_frozen
from metaopt.learners.base import MetaLearner


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc older than 2.33: no mallinfo2")
    libc.mallinfo2.restype = _Mallinfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return libc


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_after_keep_freed_memory_a_block_of_megabytes_comes_from_the_heap_not_a_mapping():
    libc = _libc()
    assert keep_freed_memory() is True and keep_freed_memory() is True  # once per process, then the same answer
    mapped = libc.mallinfo2().hblks
    block = libc.malloc(24 << 20)  # 24 MB: above glibc's dynamic threshold's start, below the 32 MB kept
    try:
        assert block and libc.mallinfo2().hblks == mapped  # glibc's default maps it (hblks + 1)
    finally:
        libc.free(block)


class _Node:
    pass


def test_long_lived_frozen_freezes_what_exists_and_hands_it_back_so_a_cycle_dropped_meanwhile_is_collected():
    held = _Node()
    held.me = held  # a cycle alive when the block starts
    probe = weakref.ref(held)
    with long_lived_frozen():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        del held  # dropped while frozen: a full collection does not look at it
        gc.collect()
        assert probe() is not None
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert probe() is None  # back in the oldest generation: collected, not kept for the process's life


def _tiny_maml() -> MetaLearner:
    from metaopt.learners import LEARNERS
    from metaopt.models import MLP

    torch.manual_seed(0)
    return LEARNERS["maml"](MLP(in_features=1, out_features=1, hidden=(8,)), {"meta_batch": 2},
                            task_kind="regression")


def test_an_inner_block_leaves_an_outer_freeze_in_place():
    with long_lived_frozen():
        frozen = gc.get_freeze_count()
        with long_lived_frozen():
            pass
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0


def test_fit_trains_with_what_its_first_step_built_frozen_and_unfreezes_at_its_end():
    from metaopt.search.fit import fit
    from metaopt.tasks import Sine

    seen = []
    val = Sine().fixed_tasks(2, "val", seed=0)
    fit(_tiny_maml(), Sine(), iterations=4, eval_interval=2, val_tasks=val, generator=torch.Generator().manual_seed(0),
        on_eval=lambda evaluation: seen.append(gc.get_freeze_count()))
    assert len(seen) == 2 and all(count > 0 for count in seen)
    assert gc.get_freeze_count() == 0


def test_fit_unfreezes_when_its_deadline_ends_the_run():
    from metaopt.search.fit import TimeLimit, fit
    from metaopt.tasks import Sine

    with pytest.raises(TimeLimit):
        fit(_tiny_maml(), Sine(), iterations=10, generator=torch.Generator().manual_seed(0), deadline=0.0)
    assert gc.get_freeze_count() == 0
