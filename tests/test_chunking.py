"""How a run groups windows into spans (one read each): by each window's own size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from recon.config import PipelineConfig, ResourcesConfig, parse_config
from recon.engine import plan
from recon.engine.plan import Span, largest_read, spans, window_rows
from recon.engine.reading import count_origin
from recon.engine.reconcile import reconcile_windows
from recon.model import Window
from recon.simulate.plant import write_receipts

START = datetime(2026, 11, 20, tzinfo=UTC)
HOURS = Window(START, START + timedelta(hours=6)).split(timedelta(hours=1))


def _hourly_receipts(pg_url: str, unique: str, per_hour: list[int]) -> PipelineConfig:
    """Receipts of `per_hour[h]` events in hour h, one row each, all in its first minute;
    a pipeline of them and a copy of them."""
    ids, times = [], []
    for h, n in enumerate(per_hour):
        ids += [f"h{h}-{i}" for i in range(n)]
        times += [START + timedelta(hours=h, seconds=i * 0.01) for i in range(n)]
    table = pa.table(
        {"event_id": ids, "received_at": pa.array(times, pa.timestamp("us", tz="UTC"))}
    )
    write_receipts(table, pg_url, unique)
    stage = {"source": "sql", "url": pg_url, "table": unique, "time": "received_at"}
    return parse_config(
        {"pipeline": unique, "stages": [{"name": "webhook", **stage}, {"name": "copy", **stage}]}
    )


def _windows(grouped: list[Span]) -> list[list[Window]]:
    return [span.windows for span in grouped]


def test_spans_follow_each_windows_rows() -> None:
    """Rows 10, 10, 100, 100, 10, 10 under a 120-row budget: the two busy hours never share
    a read; with three jobs no span holds more than two windows."""
    rows = [10, 10, 100, 100, 10, 10]
    assert _windows(spans(HOURS, rows, 1, budget=120)) == [HOURS[:3], HOURS[3:]]
    assert _windows(spans(HOURS, rows, 3, budget=120)) == [
        HOURS[:2],
        HOURS[2:3],
        HOURS[3:5],
        HOURS[5:],
    ]
    assert _windows(spans(HOURS, [500] * 6, 1, budget=120)) == [[w] for w in HOURS]
    assert [s.rows for s in spans(HOURS, rows, 1, budget=120)] == [100, 100]


def test_pool_tasks_pair_only_the_windows_over_the_budget() -> None:
    """Two jobs, rows 10, big, big, big, 10, 10 (big: over the read budget). The big windows
    are read one a span, the first two in one task (the second carries from the first), the
    third alone; the quiet ones still share a span."""
    big = 1001
    tasks = plan.pool_tasks(HOURS, [10, big, big, big, 10, 10], 2, budget=1000)
    assert [[[w.start.hour for w in s.windows] for s in task] for task in tasks] == [
        [[0]],
        [[1], [2]],
        [[3]],
        [[4, 5]],
    ]


def test_a_quiet_first_hour_does_not_size_the_busy_ones(pg_url: str, unique: str) -> None:
    """Receipts: 10 in the first hour, then 10, 1000, 1000, 10, 10 (one row per event, all
    in their hour's first minute). Each window's estimate is its own count times the first
    window's ledger rows per origin row (1 here); sized by the first hour alone, all five
    would have gone in one read."""
    per_hour = [10, 10, 1000, 1000, 10, 10]
    cfg = _hourly_receipts(pg_url, unique, per_hour)
    first = reconcile_windows(cfg, HOURS[:1])
    assert first[0].events == 10
    counts = count_origin(cfg, HOURS)
    assert counts == per_hour
    assert window_rows(largest_read(first), counts, 5, budget=2_000_000) == per_hour[1:]
    # Not countable: the first window's size.
    assert window_rows(largest_read(first), None, 5, budget=2_000_000) == [10] * 5
    # The two busy hours (02:00, 03:00) go in separate reads of at most 1,500 rows.
    assert _windows(spans(HOURS[1:], per_hour[1:], 1, budget=1500)) == [HOURS[1:3], HOURS[3:]]


def test_one_busy_hour_does_not_serialize_the_others(
    pg_url: str, unique: str, monkeypatch, tmp_path: Path
) -> None:
    """Receipts: 10, 300, 300, 1000, 10, 10 an hour under a 500-row read budget. The spans
    are [00:00], [01:00], [02:00], [03:00] (over the budget) and [04:00-06:00). 01:00 is
    read once 00:00 is computed (while it is gated); 02:00 is read on the prefetch thread
    while 01:00 is computed; the busy hour is read once 02:00 is computed, beside its
    gate and store, and computed once 02:00 is stored; so is the span after it. Every
    window's cohort is its hour's receipts, as with the
    default budget, under which the first hour and the rest are two spans."""
    import threading

    from recon.engine import runner
    from recon.engine.reconcile import Engine

    per_hour = [10, 300, 300, 1000, 10, 10]
    cfg = _hourly_receipts(pg_url, unique, per_hour)
    # The gate's suite goes to the test's own directory, not the working one.
    cfg = cfg.model_copy(update={"expectations": str(tmp_path / "expectations")})
    reads: list[tuple[int, bool]] = []  # (first hour read, read on the prefetch thread)
    # ("read" | "compute" | "stored", first hour), in order
    steps: list[tuple[str, int]] = []
    plain, compute, finish = Engine.read, Engine.compute, runner._Finish.__call__

    busy_read = threading.Event()
    overlapped: list[bool] = []  # 02:00's store waited for the busy hour's read

    def stored(self, part):  # type: ignore[no-untyped-def]
        if part[0].window.start.hour == 2:
            overlapped.append(busy_read.wait(timeout=30))
        finish(self, part)
        steps.append(("stored", part[0].window.start.hour))

    def computing(engine, span, stages, phases):  # type: ignore[no-untyped-def]
        steps.append(("compute", span.windows[0].start.hour))
        return compute(engine, span, stages, phases)

    def read(engine, span, phases, kept=None):  # type: ignore[no-untyped-def]
        hour = span.windows[0].start.hour
        reads.append((hour, threading.current_thread() is not threading.main_thread()))
        steps.append(("read", hour))
        if hour == 3:
            busy_read.set()
        return plain(engine, span, phases, kept)

    monkeypatch.setattr(Engine, "read", read)
    monkeypatch.setattr(Engine, "compute", computing)
    monkeypatch.setattr(runner._Finish, "__call__", stored)
    tight = cfg.model_copy(update={"resources": ResourcesConfig(max_rows_per_read=500)})
    busy = runner.run(tight, START, START + timedelta(hours=6), None)
    assert reads == [(0, False), (1, False), (2, True), (3, False), (4, False)]
    assert overlapped == [True]
    # The busy hour is read once 02:00 is computed and computed once 02:00 is stored;
    # 04:00 likewise around 03:00.
    for hour in (3, 4):
        assert steps.index(("compute", hour - 1)) < steps.index(("read", hour))
        assert steps.index(("stored", hour - 1)) < steps.index(("compute", hour))
    reads.clear()
    usual = runner.run(cfg, START, START + timedelta(hours=6), None)
    assert reads == [(0, False), (1, False)]
    assert [w.events for w in busy.windows] == [w.events for w in usual.windows] == per_hour
    assert [w.status for w in busy.windows] == [w.status for w in usual.windows] == ["ok"] * 6


def test_rows_handed_on_go_once_taken_and_big_spans_hand_on_after_computing(
    pg_url: str, unique: str, monkeypatch, tmp_path: Path
) -> None:
    """The spans of the test above ([00:00], [01:00], [02:00], [03:00] over the budget,
    [04:00-06:00)). What a read hands on to the next span (`Engine.carry`) is no longer
    held once that span is computed: at the compute of the span starting at hour h, no
    rows carried from a read before hour h - 1 are alive (the caller kept the first
    read's, a 120 M-event day's first 31 minutes, for the whole run). The kept rows are
    copies: around the big span (02:00 -> 03:00 -> 04:00) they are taken after the
    compute, not beside it; 01:00 hands on before its compute, as 02:00 is read
    meanwhile."""
    import weakref

    from recon.engine import runner
    from recon.engine.reconcile import Engine

    cfg = _hourly_receipts(pg_url, unique, [10, 300, 300, 1000, 10, 10])
    cfg = cfg.model_copy(
        update={
            "expectations": str(tmp_path / "expectations"),
            "resources": ResourcesConfig(max_rows_per_read=500),
        }
    )
    carried: list[tuple[int, weakref.ref[pa.Table]]] = []  # (hour read, rows it kept)
    alive: dict[int, set[int]] = {}  # compute's hour -> hours whose kept rows are alive
    steps: list[tuple[str, int]] = []
    plain_carry, plain_compute = Engine.carry, Engine.compute

    def carry(engine, span, stages, after):  # type: ignore[no-untyped-def]
        kept = plain_carry(engine, span, stages, after)
        hour = span.windows[0].start.hour
        steps.append(("carry", hour))
        carried.extend((hour, weakref.ref(k.ledger.table)) for k in (kept or {}).values())
        return kept

    def compute(engine, span, stages, phases):  # type: ignore[no-untyped-def]
        hour = span.windows[0].start.hour
        steps.append(("compute", hour))
        alive[hour] = {h for h, table in carried if table() is not None}
        return plain_compute(engine, span, stages, phases)

    monkeypatch.setattr(Engine, "carry", carry)
    monkeypatch.setattr(Engine, "compute", compute)
    report = runner.run(cfg, START, START + timedelta(hours=6), None)
    assert [w.events for w in report.windows] == [10, 300, 300, 1000, 10, 10]
    assert sorted({h for h, _ in carried}) == [0, 1, 2, 3]
    assert list(alive) == [0, 1, 2, 3, 4]
    for hour, hours in alive.items():
        assert all(h >= hour - 1 for h in hours), (hour, hours)
    for hour in (0, 2, 3):
        assert steps.index(("compute", hour)) < steps.index(("carry", hour))
    assert steps.index(("carry", 1)) < steps.index(("compute", 1))
