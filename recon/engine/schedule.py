"""Two schedulers of a run's spans: one process with a prefetching read, or a process pool.

Both take the engine's steps (`Engine`) and `finish`, which gates and stores
computed windows; `finish` runs in window order, one span at a time, and a
span queued behind a failed `finish` is never finished.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from itertools import chain

from recon.engine.carry import Kept
from recon.engine.heap import tune_process
from recon.engine.phases import Phases
from recon.engine.plan import Span
from recon.engine.reading import Read
from recon.engine.reconcile import Engine
from recon.model import Computed

Finish = Callable[[list[Computed]], None]
# What a span gets from the read of the span before it: that read's rows it needs
# (read after the span before is finished), or its own read, already under way.
Handed = dict[str, Kept] | Future[Read] | None


def in_process(
    engine: Engine,
    first: Callable[[], tuple[list[Computed], list[Span], Handed]],
    finish: Finish,
    phases: Phases,
) -> None:
    """Compute the first span's windows (`first`, which also plans every span), then the rest.

    The next span is read while this one is computed, gated and stored (reads
    wait on servers and librdkafka; DuckDB releases the GIL), unless either is
    big: a big span is read once the span before it is computed (beside its
    store) and computed once that is stored, and so is the span after it, since
    two spans' ledgers would not fit in memory together (DuckDB spills what it
    must). `first` also returns what the first span hands on to
    the second. Only this frame holds what a read hands on, so each goes when
    the next span has taken it (one kept by the caller held a 120 M-event day's
    first 31 minutes, ~340 MB, for the whole run).
    """
    computed, spans, handed = first()

    def overlapped(j: int) -> bool:
        """Whether span j is read while span j - 1 is computed."""
        return 0 < j < len(spans) and not spans[j - 1].big and not spans[j].big

    # The gate and the store run in their own thread, in window order, so the
    # next span's compute does not wait for them.
    with ThreadPoolExecutor(1) as prefetch, ThreadPoolExecutor(1) as gate:

        def hand_on(j: int, stages: Read) -> Handed:
            if j >= len(spans):
                return None
            kept = engine.carry(spans[j - 1], stages, spans[j])
            if overlapped(j):
                return prefetch.submit(engine.read, spans[j], phases, kept)
            return kept

        def step(j: int, handed: Handed) -> Handed:
            """Span j read (or its read awaited), computed, and queued for `finish`."""
            if isinstance(handed, Future):
                stages = handed.result()
            else:  # beside the previous span's store, which is light (batched COPY)
                stages = engine.read(spans[j], phases, handed)
            if not overlapped(j):
                # A big span is computed once the previous one is stored: a breached
                # window's missing IDs beside DuckDB's share would not fit.
                finished[-1].result()
            if overlapped(j + 1):  # read while this span is computed
                after = hand_on(j + 1, stages)  # at most two spans in memory
                computed = engine.compute(spans[j], stages, phases)
            else:  # the rows kept are copies: taken after the compute, not beside it
                computed = engine.compute(spans[j], stages, phases)
                after = hand_on(j + 1, stages)
            finished.append(gate.submit(finish, computed))
            return after  # this span's ledgers go with this frame, before the next read

        finished = [gate.submit(finish, computed)]
        del computed  # the gate's now: its missing IDs go once stored
        for j in range(1, len(spans)):
            handed = step(j, handed)
            if finished[-2].done():
                finished[-2].result()  # a store that failed stops the run now
        for done in finished:
            done.result()


def in_pool(
    engine: Engine,
    ahead: list[Span],
    first: Callable[[], tuple[list[Computed], list[list[Span]]]],
    finish: Finish,
    phases: Phases,
    jobs: int,
) -> None:
    """`jobs` worker processes: the spans `ahead` go to workers at once, one task each.

    Meanwhile this process computes its `first` windows and plans the tasks of
    the rest (each a few spans a worker reads one after the other), and hands
    them out. Results are finished in window order as tasks complete; each
    task's phases travel back with them into `phases`.
    """
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        # Submitting first also forks the workers before this process has read anything.
        early = [pool.submit(_work, engine, [span]) for span in ahead]
        computed, tasks = first()
        later = pool.map(_work, [engine] * len(tasks), tasks)
        finish(computed)  # the gate's first use (importing GX) overlaps the workers' reads
        del computed  # stored: its missing IDs go now, not with the run
        for results, worker_phases in chain((f.result() for f in early), later):
            phases.merge(worker_phases)
            finish(results)


def _work(engine: Engine, spans: list[Span]) -> tuple[list[Computed], Phases]:
    """A pool worker's task: its spans one after the other; its phases travel back."""
    tune_process()  # recon's own process (a forked worker may have it already)
    phases = Phases()
    return engine.reconcile(spans, phases), phases
