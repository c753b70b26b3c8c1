"""Where a run's time goes: seconds per phase, summed over windows, threads and processes.

Phases overlap (sources are read concurrently, chunks run in parallel worker
processes), so their sum can exceed the run's wall time; `wall` is kept apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Phases:
    """Accumulated seconds per phase name (picklable: workers send theirs back)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        """Add `seconds` to phase `name`."""
        with _LOCK:  # source reads report from several threads
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Time the block as phase `name` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def merge(self, other: Phases) -> None:
        """Add another accumulator's phases (a worker's) into this one."""
        for name, seconds in other.seconds.items():
            self.add(name, seconds)

    def as_dict(self) -> dict[str, float]:
        """Phase -> seconds, rounded to milliseconds, in the order phases first ran."""
        return {name: round(seconds, 3) for name, seconds in self.seconds.items()}


_LOCK = threading.Lock()
