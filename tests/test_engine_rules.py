"""The loss rules, table-driven on tiny ledgers (DESIGN.md "Semantics").

Window [10:00, 11:00). Pipeline webhook -> kafka -> lake; a dead-letter sink
for the lake hop. Each case states what was planted and the counters it must
produce (only the counters named are checked; every other counter must be 0).
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from recon.engine.loss import compute
from recon.model import COUNTERS, LedgerRead, StageInput

from .helpers import W, ledger

CASES = [
    dict(
        why="an event exactly at start is in the cohort; exactly at end is not",
        origin=[("a", "10:00:00"), ("b", "11:00:00")],
        kafka=[("a", "10:00:01"), ("b", "11:00:01")],
        lake=[("a", "10:00:02"), ("b", "11:00:02")],
        expect={
            "webhook": {"upstream": 1, "arrived": 1},
            "kafka": {"upstream": 1, "arrived": 1},
            "lake": {"upstream": 1, "arrived": 1},
        },
    ),
    dict(
        why="seen at the lake but not in Kafka: seeing it later proves it passed Kafka",
        origin=[("a", "10:10:00")],
        kafka=[],
        lake=[("a", "10:10:02")],
        expect={
            "webhook": {"upstream": 1, "arrived": 1},
            "kafka": {"upstream": 1, "arrived": 1},
            "lake": {"upstream": 1, "arrived": 1},
        },
    ),
    dict(
        why="lost at Kafka is charged to the Kafka hop only; the lake hop never saw it",
        origin=[("a", "10:10:00"), ("b", "10:20:00")],
        kafka=[("b", "10:20:01")],
        lake=[("b", "10:20:02")],
        expect={
            "webhook": {"upstream": 2, "arrived": 2},
            "kafka": {"upstream": 2, "arrived": 1, "lost": 1},
            "lake": {"upstream": 1, "arrived": 1},
        },
        missing={("a", "kafka", "lost")},
    ),
    dict(
        why="in Kafka, not in the lake, in the dead-letter sink: dead-lettered, not lost",
        origin=[("a", "10:10:00"), ("b", "10:20:00")],
        kafka=[("a", "10:10:01"), ("b", "10:20:01")],
        lake=[("b", "10:20:02")],
        dead=[("a", "10:10:02")],
        expect={
            "webhook": {"upstream": 2, "arrived": 2},
            "kafka": {"upstream": 2, "arrived": 2},
            "lake": {"upstream": 2, "arrived": 1, "dead_lettered": 1},
        },
        missing={("a", "lake", "dead_lettered")},
    ),
    dict(
        why="dead-lettered once, then delivered on retry: arrived",
        origin=[("a", "10:10:00")],
        kafka=[("a", "10:10:01")],
        lake=[("a", "10:12:00")],
        dead=[("a", "10:10:02")],
        expect={
            "webhook": {"upstream": 1, "arrived": 1},
            "kafka": {"upstream": 1, "arrived": 1},
            "lake": {"upstream": 1, "arrived": 1},
        },
    ),
    dict(
        why="offset at/after the group's committed offset is pending; before it, lost",
        origin=[("a", "10:10:00"), ("b", "10:20:00"), ("c", "10:30:00")],
        kafka=[("a", "10:10:01", 0, 4), ("b", "10:20:01", 0, 5), ("c", "10:30:01", 1, 9)],
        committed={0: 5, 1: 3},
        lake=[],
        expect={
            "webhook": {"upstream": 3, "arrived": 3},
            "kafka": {"upstream": 3, "arrived": 3},
            "lake": {"upstream": 3, "lost": 1, "pending": 2},
        },
        missing={("a", "lake", "lost"), ("b", "lake", "pending"), ("c", "lake", "pending")},
    ),
    dict(
        why="a partition without a committed offset proves nothing: lost, not pending",
        origin=[("a", "10:10:00"), ("c", "10:30:00")],
        kafka=[("a", "10:10:01", 0, 7), ("c", "10:30:01", 1, 9)],
        committed={0: 5},
        lake=[],
        expect={
            "webhook": {"upstream": 2, "arrived": 2},
            "kafka": {"upstream": 2, "arrived": 2},
            "lake": {"upstream": 2, "lost": 1, "pending": 1},
        },
        missing={("a", "lake", "pending"), ("c", "lake", "lost")},
    ),
    dict(
        why="a dead letter outranks pending: the consumer has decided about it",
        origin=[("a", "10:10:00")],
        kafka=[("a", "10:10:01", 0, 7)],
        committed={0: 5},
        lake=[],
        dead=[("a", "10:10:02")],
        expect={
            "webhook": {"upstream": 1, "arrived": 1},
            "kafka": {"upstream": 1, "arrived": 1},
            "lake": {"upstream": 1, "dead_lettered": 1},
        },
        missing={("a", "lake", "dead_lettered")},
    ),
    dict(
        why="Kafka retention deleted data before 10:30: older absences are unverifiable",
        origin=[("a", "10:10:00"), ("b", "10:40:00"), ("c", "10:45:00")],
        kafka=[("c", "10:45:01")],
        kafka_gap_until="10:30:00",
        lake=[("c", "10:45:02")],
        expect={
            "webhook": {"upstream": 3, "arrived": 3},
            "kafka": {"upstream": 3, "arrived": 1, "unverifiable": 1, "lost": 1},
            "lake": {"upstream": 1, "arrived": 1},
        },
        missing={("a", "kafka", "unverifiable"), ("b", "kafka", "lost")},
    ),
    dict(
        why="in the lake's dead letters but gone from Kafka (retention): it passed Kafka",
        origin=[("a", "10:10:00"), ("b", "10:40:00")],
        kafka=[("b", "10:40:01")],
        kafka_gap_until="10:30:00",
        lake=[("b", "10:40:02")],
        dead=[("a", "10:10:02")],
        expect={
            "webhook": {"upstream": 2, "arrived": 2},
            "kafka": {"upstream": 2, "arrived": 2},
            "lake": {"upstream": 2, "arrived": 1, "dead_lettered": 1},
        },
        missing={("a", "lake", "dead_lettered")},
    ),
    dict(
        why="first seen at the lake after the window's end (within grace): late, arrived",
        origin=[("a", "10:59:00"), ("b", "10:30:00")],
        kafka=[("a", "10:59:01"), ("b", "10:30:01")],
        lake=[("a", "11:05:00"), ("b", "10:30:02")],
        expect={
            "webhook": {"upstream": 2, "arrived": 2},
            "kafka": {"upstream": 2, "arrived": 2},
            "lake": {"upstream": 2, "arrived": 2, "late": 1},
        },
    ),
    dict(
        why="duplicates are gross minus net, cohort events only; they cannot hide a loss",
        origin=[("a", "10:10:00"), ("a", "10:10:02"), ("b", "10:20:00"), ("z", "09:50:00")],
        kafka=[
            ("a", "10:10:01"),
            ("a", "10:10:01"),
            ("a", "10:10:03"),
            ("z", "09:50:01"),
            ("z", "09:50:02"),
        ],
        lake=[("a", "10:10:05"), ("a", "10:10:06")],
        expect={
            "webhook": {"upstream": 2, "arrived": 2, "duplicates": 1},
            "kafka": {"upstream": 2, "arrived": 1, "lost": 1, "duplicates": 2},
            "lake": {"upstream": 1, "arrived": 1, "duplicates": 1},
        },
        missing={("b", "kafka", "lost")},
    ),
    dict(
        why="orphans: stage time in W, no origin row in the searched range",
        origin=[("a", "10:10:00"), ("p", "09:55:00")],
        kafka=[
            ("a", "10:10:01"),
            ("x", "10:30:00"),
            ("x", "10:30:01"),
            ("y", "11:10:00"),
            ("p", "10:00:30"),
        ],
        lake=[("a", "10:10:02"), ("x", "10:30:02"), ("w", "10:40:00")],
        expect={
            "webhook": {"upstream": 1, "arrived": 1},
            "kafka": {"upstream": 1, "arrived": 1, "orphans": 1},
            "lake": {"upstream": 1, "arrived": 1, "orphans": 2},
        },
    ),
    dict(
        why="a webhook retry straddling the start belongs to the window of its first receipt",
        origin=[("a", "09:59:59"), ("a", "10:00:01")],
        kafka=[("a", "10:00:00")],
        lake=[("a", "10:00:02")],
        expect={"webhook": {}, "kafka": {}, "lake": {}},
    ),
]


def _compute(case: dict):
    stages = [
        StageInput("webhook", ledger(case["origin"], "receipts")),
        StageInput(
            "kafka",
            ledger(case["kafka"], "events", case.get("committed"), case.get("kafka_gap_until")),
        ),
        StageInput("lake", ledger(case["lake"], "lake"), [ledger(case.get("dead", []), "dlq")]),
    ]
    return compute(W, stages)


@pytest.mark.parametrize("case", CASES, ids=[c["why"] for c in CASES])
def test_rule(case: dict) -> None:
    result = _compute(case)
    for metrics in result.stages:
        expected = {name: 0 for name in COUNTERS} | case["expect"][metrics.stage]
        got = {name: getattr(metrics, name) for name in COUNTERS}
        assert got == expected, metrics.stage
    missing = {
        tuple(r.values())
        for r in result.missing.select(["event_id", "stage", "outcome"]).to_pylist()
    }
    assert missing == case.get("missing", set())
    e2e = result.end_to_end
    assert (
        e2e.upstream
        == result.events
        == e2e.arrived + e2e.lost + e2e.dead_lettered + e2e.pending + e2e.unverifiable
    )


def test_loss_rate_and_latency() -> None:
    """4 events, 1 lost at the lake: lake loss rate 1/4; latency over arrived events only."""
    result = _compute(
        dict(
            origin=[("a", "10:00:00"), ("b", "10:00:00"), ("c", "10:00:00"), ("d", "10:00:00")],
            kafka=[
                ("a", "10:00:00.1"),
                ("b", "10:00:00.2"),
                ("c", "10:00:00.3"),
                ("d", "10:00:00.4"),
            ],
            lake=[("a", "10:00:01"), ("b", "10:00:02"), ("c", "10:00:04")],
        )
    )
    lake = result.stages[2]
    assert (lake.upstream, lake.lost, lake.loss_rate) == (4, 1, 0.25)
    assert lake.latency_ms == {"p50": 2000.0, "p95": 4000.0, "p99": 4000.0, "max": 4000.0}
    assert result.end_to_end.loss_rate == 0.25
    row = result.missing.to_pylist()[0]
    assert (row["event_id"], row["last_stage"], row["last_location"]) == ("d", "kafka", "events")


def test_empty_window() -> None:
    result = _compute(dict(origin=[], kafka=[], lake=[]))
    assert result.events == 0
    assert all(m.loss_rate == 0 for m in result.stages)


def test_last_location_from_each_kind_of_ledger() -> None:
    """Where each missing event was last seen, from a ledger of each shape.

    Planted (webhook -> kafka -> lake -> warehouse): `a` only received (a table:
    one place); `b` in Kafka partition 1 at offsets 7 and, a retry 4 s later, 9;
    `c` and `d` in the lake, each in its own file (two reads of one file each);
    `e` everywhere. `a` is lost at Kafka, `b` at the lake, `c` and `d` at the
    warehouse; the places are the first row's at the stage before.
    """
    lake = pa.concat_tables(
        [
            ledger([("c", "10:10:02"), ("e", "10:10:02")], "lake/a.parquet").table,
            ledger([("d", "10:20:02")], "lake/b.parquet").table,
        ]
    )
    origin = [(x, "10:00:00") for x in "abcde"]
    kafka = [
        ("b", "10:00:01", 1, 7),
        ("b", "10:00:05", 1, 9),
        ("c", "10:00:01", 0, 3),
        ("d", "10:00:01", 0, 4),
        ("e", "10:00:01", 0, 5),
    ]
    stages = [
        StageInput("webhook", ledger(origin, "receipts")),
        StageInput("kafka", ledger(kafka, "events")),
        StageInput("lake", LedgerRead("lake", lake, [])),
        StageInput("warehouse", ledger([("e", "10:30:00")], "warehouse")),
    ]
    rows = compute(W, stages).missing.select(["event_id", "stage", "last_stage", "last_location"])
    assert [tuple(r.values()) for r in rows.to_pylist()] == [
        ("a", "kafka", "webhook", "receipts"),
        ("b", "lake", "kafka", "events[1]@7"),
        ("c", "warehouse", "lake", "lake/a.parquet"),
        ("d", "warehouse", "lake", "lake/b.parquet"),
    ]


def test_passed_by_a_dead_letters_evidence_has_no_last_sighting() -> None:
    """The retention case above: a is dead-lettered at the lake hop, yet was never seen in
    Kafka: its missing row names Kafka as the stage before, with no time or place there."""
    case = next(c for c in CASES if c["why"].startswith("in the lake's dead letters but gone"))
    (row,) = _compute(case).missing.to_pylist()
    assert (row["event_id"], row["last_stage"], row["last_seen_at"], row["last_location"]) == (
        "a",
        "kafka",
        None,
        None,
    )
