"""A trial's process keeps freed activation memory in the heap (glibc): a block of a few MB is not a fresh mapping."""

from __future__ import annotations

import ctypes
import platform

import pytest

from metaopt.allocator import keep_freed_memory


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
