"""Planning a run, pure: which windows are read together.

A *span* is a group of consecutive windows read at once: every source is read
over the ranges of all its windows (no re-reading of the grace and skew ranges
consecutive windows share), and each window is computed from that one read
looking only at its own ranges. Windows are the unit of memory: a span never
has fewer than one, and a span's largest ledger stays under one read's budget
of rows when its windows allow it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from recon.model import Computed, Window


@dataclass(frozen=True)
class Span:
    """Consecutive windows read at once; `rows` estimates its largest window's largest ledger.

    `budget` is the rows one read of one source may hold (`resources.max_rows_per_read`).
    """

    windows: list[Window]
    budget: int
    rows: int = 0

    @property
    def range(self) -> Window:
        """From the first window's start to the last one's end."""
        return Window(self.windows[0].start, self.windows[-1].end)

    @property
    def big(self) -> bool:
        """Over one read's budget: such a span is read alone, never beside another read."""
        return self.rows > self.budget


def spans(windows: list[Window], rows: list[int], jobs: int, budget: int) -> list[Span]:
    """Group consecutive windows so that one read of a source stays under `budget` rows.

    `rows` holds each window's estimated rows (`window_rows`). With several
    jobs, there are at least as many spans as jobs when possible.
    """
    most = -(-len(windows) // max(jobs, 1))
    out: list[Span] = []
    current: list[Window] = []
    sizes: list[int] = []
    for window, n in zip(windows, rows, strict=True):
        if current and (sum(sizes) + n > budget or len(current) >= most):
            out.append(Span(current, budget, max(sizes)))
            current, sizes = [], []
        current.append(window)
        sizes.append(n)
    if current:
        out.append(Span(current, budget, max(sizes)))
    return out


def pool_tasks(windows: list[Window], rows: list[int], jobs: int, budget: int) -> list[list[Span]]:
    """The tasks of a process pool: each a few spans its worker reads one after the other.

    A worker's next span takes over the rows its ranges share with the one
    before (carry.py). Consecutive windows over one read's budget go two by
    two, one span each: the second reads only what the first has not (two
    reads of 1.5 windows' rows would be 3; these are 2.5 with a 30-minute
    grace), and a worker holds one window's results while it computes the other.
    """
    tasks: list[list[Span]] = []
    for span in spans(windows, rows, jobs, budget):  # a window over the budget is a span of its own
        previous = tasks[-1] if tasks else []
        if span.big and len(previous) == 1 and previous[0].big:
            previous.append(span)
        else:
            tasks.append([span])
    return tasks


def window_rows(largest: int | None, counts: list[int] | None, rest: int, budget: int) -> list[int]:
    """The estimated rows of each window's largest ledger after the first, to size reads.

    `counts` are the origin rows of the first window and the `rest` after it
    (`reading.count_origin`). The first window's largest ledger (`largest`,
    None when it could not be read) per origin row scales the others' counts. A
    day's hours differ (a quiet night, a busy noon): sized by the first hour
    alone, a quiet midnight put the busy hours of a day in one read, far over
    its budget.
    """
    if counts is None:  # not countable: the first window's size, else one window a read
        return [budget if largest is None else largest] * rest
    per_origin_row = max(1.0, (largest or 0) / counts[0]) if counts[0] else 1.0
    return [math.ceil(n * per_origin_row) for n in counts[1:]]


def largest_read(results: list[Computed]) -> int | None:
    """Rows of the largest ledger of computed windows; None if none could be read."""
    if any(r.error is not None for r in results):
        return None
    return max(
        (m.upstream + m.duplicates + m.orphans for r in results for m in r.stages),
        default=0,
    )
