"""The C heap setting a run relies on for its memory bound (glibc only)."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import platform
import sys

import pytest

from recon.engine.heap import MMAP_THRESHOLD, bound_heap

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
pytestmark = pytest.mark.skipif(not GLIBC, reason="mallopt and mallinfo2 are glibc's")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def test_a_big_block_is_still_mapped_after_one_was_freed() -> None:
    """Without `bound_heap`, freeing a mapped 1 MiB block makes glibc serve the next
    one from an arena, which keeps it when freed. With it, the next 1 MiB block is a
    mapping of its own: mapped bytes grow by exactly 1 MiB plus glibc's 8-byte
    header, rounded up to whole pages."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = _MallInfo2
    size = 1 << 20
    assert size > MMAP_THRESHOLD
    bound_heap()
    libc.free(libc.malloc(size))
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    try:
        assert libc.mallinfo2().hblkhd - before == -(-(size + 8) // mmap.PAGESIZE) * mmap.PAGESIZE
    finally:
        libc.free(block)
