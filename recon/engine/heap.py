"""How a run keeps the C heap (glibc malloc) from holding memory it has freed.

DuckDB, librdkafka, libpq and numpy allocate through glibc. glibc serves a
block of 128 KiB or more with its own mmap, returned to the OS on free, but
each such free raises that threshold to the freed block's size (up to 32 MiB):
from then on DuckDB's 256 KiB blocks and the readers' buffers come from
per-thread arenas, which keep what is freed (bench/README.md has the figures).

That keeping is what makes the next read fast (its pages are already mapped),
so a run leaves glibc alone until a window outgrows one read's budget; from
then on the process bounds its memory instead (`bound_memory`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pyarrow as pa

_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 << 10  # glibc's initial value, kept fixed


_tuned = False
_bounded = False


def tune_process() -> None:
    """Opt in to recon's allocator settings for the whole process, for good.

    Lets `bound_memory` take over glibc once a window is big. For processes recon
    owns: the CLI, the DAG's tasks, pool workers. A notebook calling `recon.api`
    keeps its own allocator's behaviour.
    """
    global _tuned
    _tuned = True


def bound_memory() -> None:
    """From now on, hand freed memory back to the OS: a big window or a shard is next.

    Serves every block of 128 KiB or more from its own mapping (setting the
    threshold turns off glibc's raising of it), and hands memory back between
    reads and computes (`release_freed_memory`). It costs page faults: on the
    12 M day, 3-4 s of system CPU (bench/README.md). Only in a tuned process;
    nothing changes in glibc where the C library is not glibc.
    """
    global _bounded
    if not _tuned or _bounded:
        return
    if _LIBC is not None and hasattr(_LIBC, "mallopt"):
        _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    _bounded = True


def release_freed_memory() -> None:
    """Hand memory freed by the reads back to the OS before DuckDB takes its share.

    librdkafka's and the readers' threads free hundreds of MB that glibc keeps in
    per-thread arenas, and Arrow's mimalloc pool keeps what the freed ledgers
    held. Only once the process bounds its memory (`bound_memory`).
    """
    if not _bounded:
        return
    pa.default_memory_pool().release_unused()  # Arrow's allocator (mimalloc) keeps it too
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
