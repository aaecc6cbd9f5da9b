"""The memory of a process that trains: freed activation memory kept for the next step (glibc only), and the
objects that outlive every step left out of Python's full collections while it trains.

glibc's malloc serves a block above its mmap threshold (dynamic, from 128 KB) with a fresh mapping and
unmaps it when freed, so an image learner's activations of a few MB and oneDNN's scratch buffers are
mapped, faulted in page by page and unmapped again on every step. Keeping them in the heap
measured 3.5x on a Conv-4 first convolution (``[25, 1, 28, 28]``, channels-last: 1.15 to 0.33 ms)
and 10-12% on a ProtoNet meta-step in a fresh process (2-3% for second-order MAML; README, "Image-scale
throughput"). The cost: the process keeps up to ``TRIM`` of freed memory at the top of its heap instead
of returning it at once (its peak is unchanged).

Python's cyclic collector runs a full collection whenever the objects promoted to its oldest generation
pass a quarter of those already there; an autograd step's short-lived objects are promoted while they live,
so a meta-training loop triggers one every few dozen steps, each traversing every module, function and
class the process has imported: 170 ms for the 350,000 objects of a Conv-4 MAML benchmark process, about
4 ms a 150 ms step. ``long_lived_frozen`` moves what exists after the first step to the permanent generation
(``gc.freeze``) for the rest of the loop: the full collections then traverse only what the loop made.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Iterator

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP = 32 << 20  # blocks below this come from the heap (glibc's own upper bound for the dynamic threshold)
TRIM = 512 << 20  # freed memory at the heap's top kept up to this before it is returned


@functools.cache
def keep_freed_memory() -> bool:
    """Set this process's glibc malloc to reuse freed blocks below 32 MB instead of unmapping them; False where
    the C library is not glibc (nothing changed). Once per process."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, macOS, Windows: no glibc mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM))


@contextlib.contextmanager
def long_lived_frozen() -> Iterator[None]:
    """Inside the block, what the process holds at its start is left out of the cyclic collector's work
    (``gc.freeze``, constant time: no collection first, which would cost a short trial 0.2 s); at its end, handed
    back to the oldest generation (``gc.unfreeze``), so that a cycle dropped meanwhile is collected then, not kept.
    Where the process has frozen objects already (its owner's, or an outer block's), it leaves them to that owner."""
    owner = gc.get_freeze_count() == 0
    if owner:
        gc.freeze()
    try:
        yield
    finally:
        if owner:
            gc.unfreeze()
