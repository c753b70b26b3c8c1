"""The C heap setting a run relies on for its memory bound (glibc only)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"
pytestmark = pytest.mark.skipif(not GLIBC, reason="mallopt and mallinfo2 are glibc's")


# Run in a fresh interpreter: in a process that has freed big blocks into its arenas
# (earlier tests), glibc serves the next one from those free chunks before it maps.
_CHECK = """
import ctypes, ctypes.util, mmap, sys
from recon.engine.heap import MMAP_THRESHOLD, bound_memory, tune_process

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
size = 1 << 20
assert size > MMAP_THRESHOLD
if sys.argv[1] in ("tuned", "bound"):
    tune_process()
if sys.argv[1] == "bound":
    bound_memory()
libc.free(libc.malloc(size))
before = libc.mallinfo2().hblkhd
block = libc.malloc(size)
grew = libc.mallinfo2().hblkhd - before
libc.free(block)
print(grew, -(-(size + 8) // mmap.PAGESIZE) * mmap.PAGESIZE)
"""


def _mapped_growth(mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CHECK, mode], capture_output=True, text=True, check=True
    ).stdout
    grew, page_rounded = map(int, out.split())
    return grew, page_rounded


def test_a_big_block_is_still_mapped_after_one_was_freed() -> None:
    """Without `bound_memory`, freeing a mapped 1 MiB block makes glibc serve the next
    one from an arena, which keeps it when freed (mapped bytes do not grow): so in a
    process that is only tuned (a run of small windows), and in an untuned one. Bound
    (a big window or a shard), the next 1 MiB block is a mapping of its own: mapped
    bytes grow by exactly 1 MiB plus glibc's 8-byte header, rounded up to whole pages."""
    grew, page_rounded = _mapped_growth("bound")
    assert grew == page_rounded
    assert _mapped_growth("tuned") == (0, page_rounded)
    assert _mapped_growth("default") == (0, page_rounded)


def test_bound_memory_needs_a_tuned_process() -> None:
    """A notebook's process (never tuned) keeps glibc's own behaviour even when a big
    window is computed in it: `bound_memory` changes nothing there."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from recon.engine import heap; heap.bound_memory(); print(heap._bounded)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "False"
