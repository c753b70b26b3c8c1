"""Pause Python's cyclic garbage collector around allocation-heavy loops that make no cycles.

The Kafka fetch loop (librdkafka hands over one GC-tracked Message object
per record) took twice as long with the collector running (bench/README.md).
The loop creates no reference
cycles (messages, lists, bytes), so reference counting frees everything; the
collector is only paused, never skipped for cycles made elsewhere afterwards.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic GC for the block; nested and concurrent pauses are counted."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
