"""Cases from the field where recon stored a wrong number or a silent `ok` (issue 17).

Each test plants exactly its case in the real servers or files and asserts every
counter that the case touches.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from recon import api
from recon.cli import main
from recon.config import parse_config
from recon.engine.early_warning import check
from recon.report import window_table
from recon.simulate.plant import Targets, commit_offsets, create_topic, plant
from recon.simulate.scenario import plan
from recon.simulate.truth import truth

from .test_kafka_reader import _produce
from .test_run import _config, _scenario

DAY = datetime(2026, 11, 20, tzinfo=UTC)
_TS = pa.timestamp("us", tz="UTC")


def _counters(result: api.Reconciliation, stage: str) -> list[dict[str, object]]:
    frame = result.stage_metrics()
    return frame[frame["stage"] == stage].to_dict("records")


def test_a_rewound_consumer_hides_no_loss_past_the_stall(
    pg_url: str, bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """The planted 3-hour scenario (test_run: 5 % lost at the lake in hour 1, the loader
    lagging from 02:50), then the lake loader's group rewound to offset 0 to reprocess:
    every event missing at the lake is now at or beyond the committed offset.

    Judged at 2026-11-21T02:00 (window.stall 24 h): windows 0 and 1 ended a stall ago
    (window 1 exactly), so nothing of them is in flight: their missing lake events are lost
    (hour 1's 50 stay a breach, with a note naming the group and its offsets), while window
    2's 174 (lagging) are pending: incomplete. Before the stall
    rule the rewound group turned every one of them into `pending`, and the breach into
    `incomplete`, exit 0."""
    p = plan(_scenario())
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(p, targets)
    commit_offsets(bootstrap, targets.group, targets.topic, dict.fromkeys(range(4), 0))
    config = _config(tmp_path, targets)
    now = "2026-11-21T02:00:00Z"
    out = tmp_path / "run.json"
    args = ["--start", "2026-11-20T00:00Z", "--end", "2026-11-20T03:00Z", "--now", now]
    code = main(["run", "--config", str(config), *args, "--json", str(out)])
    assert code == 1
    windows = json.loads(out.read_text())["windows"]
    assert [w["status"] for w in windows] == ["ok", "breach", "incomplete"]
    expected = truth(p, timedelta(hours=1), timedelta(minutes=30), timedelta(minutes=1))
    for i, (window, want) in enumerate(zip(windows, expected, strict=True)):
        lake = next(s for s in window["stages"] if s["stage"] == "lake")
        missing = want.stages["lake"]["lost"] + want.stages["lake"]["pending"]
        stalled = i < 2
        assert (lake["lost"], lake["pending"]) == ((missing, 0) if stalled else (0, missing))
        assert lake["dead_lettered"] == want.stages["lake"]["dead_lettered"]
        kafka = next(s for s in window["stages"] if s["stage"] == "kafka")
        assert kafka["lost"] == want.stages["kafka"]["lost"]
        notes = [n for n in window["notes"] if "past stall" in n]
        if stalled and missing:
            offsets = ", ".join(f"[{p}]@0" for p in range(4))
            assert notes == [
                f"lake: {missing} events in flight past stall (1 day, 0:00:00): still at or "
                f"beyond the committed offsets of consumer group '{targets.group}' on kafka "
                f"({offsets}) a stall after the window's end, so charged as lost (a rewound "
                "or stuck consumer)"
            ]
        else:
            assert notes == []
    # The notes are stored with each window, and read back without touching the sources.
    kept = api.stored(config)
    latest = kept.windows().set_index("window_start")
    hour_1 = latest.loc[DAY.replace(hour=1), "window_id"]
    assert kept.notes(hour_1) == windows[1]["notes"]
    assert [w.stages["lake"]["lost"] for w in expected] == [0, 50, 0]
    assert expected[2].stages["lake"]["pending"] == 174


def _log(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _lake(path: Path, ids: list[str], times: list[datetime]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    table = pa.table({"event_id": ids, "ingested_at": pa.array(times, _TS)})
    pq.write_table(table, path / "part-0.parquet")


def _files_to_lake(tmp_path: Path, **extra: object) -> dict[str, object]:
    return {
        "pipeline": "p",
        "window": {"size": "1h", "grace": "30m", "skew": "1m", "settle": "2h"},
        "results": f"sqlite:///{tmp_path / 'results.sqlite'}",
        "expectations": str(tmp_path / "expectations"),
        "stages": [
            {"name": "gateway", "source": "files", "path": str(tmp_path / "gw" / "*.jsonl")},
            {"name": "lake", "source": "parquet", "path": str(tmp_path / "lake")},
        ],
        **extra,
    }


def test_a_downstream_clock_behind_the_origin_is_named_with_the_skew_to_set(
    tmp_path: Path,
) -> None:
    """Windows [10:00, 11:00) and [11:00, 12:00): 100 receipts each, one every 36 s from the
    hour; the lake's clock is 3 minutes behind: each event is written 2 s after its receipt
    but stamped 178 s before it. skew is 1 minute.

    Window 1: the lake is searched from 09:59, so the 4 events received before 10:01:58
    (stamped before 09:59) are lost; the lake rows of 11:01:12, 11:01:48 and 11:02:24
    (stamped 10:58:14-10:59:26, in window 1, with no receipt in its origin range up to
    11:01) are 3 orphans. Window 2: 4 lost likewise, no orphan. Latency p50 is -178,000 ms,
    every arrived event's latency is negative: the notes say the lake's clock is behind,
    by up to 178 s, and suggest a skew of 4m. With that skew, nothing is lost nor orphaned
    and the note still says the clock is behind (no skew advice: it is covered)."""
    receipts = [
        DAY.replace(hour=h) + timedelta(seconds=36 * i) for h in (10, 11) for i in range(100)
    ]
    ids = [f"e{i:03d}" for i in range(200)]
    _log(tmp_path / "gw" / "a.jsonl", [
        {"event_id": e, "received_at": t.isoformat()} for e, t in zip(ids, receipts, strict=True)
    ])  # fmt: skip
    _lake(tmp_path / "lake" / "dt=2026-11-20", ids, [t - timedelta(seconds=178) for t in receipts])
    cfg = parse_config(_files_to_lake(tmp_path))
    result = api.reconcile(cfg, "2026-11-20T10:00Z", "2026-11-20T12:00Z", now="2026-11-20T20:00Z")
    lake = _counters(result, "lake")
    assert [(r["upstream"], r["arrived"], r["lost"], r["orphans"]) for r in lake] == [
        (100, 96, 4, 3),
        (100, 96, 4, 0),
    ]
    assert [r["latency_p50_ms"] for r in lake] == [-178_000.0, -178_000.0]
    for w in result.report.windows:
        assert [n for n in w.notes if "clock" in n] == [
            "lake: 96 of 96 arrived events were seen before their origin time, up to 178s "
            "before: the stage's clock is behind the origin's; the median event by 178s, "
            "more than window.skew (60s), so events near the window's edges are searched at "
            "the wrong time and count as lost or orphans: set window.skew to at least 4m, "
            "or fix the clock"
        ]
    cfg = parse_config(_files_to_lake(tmp_path, window={"size": "1h", "skew": "4m"}))
    result = api.reconcile(cfg, "2026-11-20T10:00Z", "2026-11-20T12:00Z", now="2026-11-20T20:00Z")
    lake = _counters(result, "lake")
    assert [(r["arrived"], r["lost"], r["orphans"]) for r in lake] == [(100, 0, 0), (100, 0, 0)]
    assert [n for n in result.report.windows[0].notes if "clock" in n] == [
        "lake: 100 of 100 arrived events were seen before their origin time, up to 178s "
        "before: the stage's clock is behind the origin's"
    ]


def test_a_bad_row_counts_in_the_one_window_that_holds_its_time(
    tmp_path: Path, bootstrap: str, unique: str
) -> None:
    """Windows [10:00, 11:00) and [11:00, 12:00) with a 30-minute grace: every downstream
    row stamped 11:00-11:30 is in both windows' search ranges. Planted: receipts e0-e9 at
    10:00-10:45 (every 5 minutes) and e10-e19 at 11:00-11:45, each on the bus a second
    later; on the bus, a record with an empty key stamped 11:10 and one with no key stamped
    10:20; in the gateway log, a line that is not JSON after the 10:45 receipt (its place:
    10:45, the line before it) and a line with a time that is not one at 11:20 (after the
    11:15 receipt).

    Unreadable per window, whether the two windows are read at once or one at a time:
    gateway 1 and 1, bus 1 and 1 — 4 in all, as planted (before, the empty key was counted
    in both windows, and the broken line too)."""
    ids = [f"e{i}" for i in range(20)]
    times = [DAY.replace(hour=10 + i // 10) + timedelta(minutes=5 * (i % 10)) for i in range(20)]
    rows: list[dict[str, object]] = [
        {"event_id": e, "received_at": t.isoformat()} for e, t in zip(ids, times, strict=True)
    ]
    gw = tmp_path / "gw" / "a.jsonl"
    gw.parent.mkdir()
    lines = [json.dumps(r) for r in rows]
    lines.insert(10, "{not json")  # after e9 (10:45)
    lines.insert(15 + 1, json.dumps({"event_id": "x", "received_at": "not a time"}))  # after e14
    gw.write_text("\n".join(lines) + "\n")
    create_topic(bootstrap, unique, 1)
    records = [
        {"key": e.encode(), "t": (t + timedelta(seconds=1)).strftime("%H:%M:%S")}
        for e, t in zip(ids, times, strict=True)
    ]
    records.insert(5, {"key": None, "t": "10:20:00"})
    records.append({"key": b"", "t": "11:10:00"})
    _produce(bootstrap, unique, records)
    config = _files_to_lake(tmp_path)
    config["stages"][1] = {
        "name": "bus", "source": "kafka", "bootstrap": bootstrap, "topic": unique, "id": "key",
    }  # fmt: skip
    cfg = parse_config(config)
    now = "2026-11-20T20:00Z"
    together = api.reconcile(cfg, "2026-11-20T10:00Z", "2026-11-20T12:00Z", now=now)
    apart = [
        api.reconcile(cfg, f"2026-11-20T{h}:00Z", f"2026-11-20T{h + 1}:00Z", now=now)
        for h in (10, 11)
    ]
    frame = together.stage_metrics()
    assert frame[["window_start", "stage", "unreadable"]].values.tolist() == [
        [DAY.replace(hour=10), "gateway", 1],
        [DAY.replace(hour=10), "bus", 1],
        [DAY.replace(hour=10), "end_to_end", 2],
        [DAY.replace(hour=11), "gateway", 1],
        [DAY.replace(hour=11), "bus", 1],
        [DAY.replace(hour=11), "end_to_end", 2],
    ]
    for one, hour in zip(apart, (10, 11), strict=True):
        f = one.stage_metrics()
        assert f[["window_start", "stage", "unreadable"]].values.tolist() == [
            [DAY.replace(hour=hour), "gateway", 1],
            [DAY.replace(hour=hour), "bus", 1],
            [DAY.replace(hour=hour), "end_to_end", 2],
        ]
    # Each broken place is named in its own window's notes only.
    w10, w11 = together.report.windows
    assert any(f"{gw}:11: not JSON" in n for n in w10.notes)
    assert not any(f"{gw}:11:" in n for n in w11.notes)
    assert any(f"{unique}[0]@21: empty key" in n for n in w11.notes)
    assert not any("@21" in n for n in w10.notes)


def test_an_origin_whose_times_cannot_be_read_is_a_breach_never_ok(tmp_path: Path, capsys) -> None:
    """The gateway logs epoch milliseconds, the config reads ISO times: 20 receipts in
    [10:00, 11:00), all unreadable, and the lake has the 20 events. Before: `ok events=0`,
    exit 0. Now: events 0, gateway unreadable 20 (each placed by its epoch), rate 1.0 above
    max_unreadable_rate (the loss rate, 0.0001): breach, exit 1, with a note; the lake's
    20 rows are orphans."""
    ids = [f"e{i}" for i in range(20)]
    times = [DAY.replace(hour=10, minute=2 * i) for i in range(20)]
    ms = [int(t.timestamp() * 1000) for t in times]
    _log(tmp_path / "gw" / "a.jsonl", [
        {"event_id": e, "received_at": m} for e, m in zip(ids, ms, strict=True)
    ])  # fmt: skip
    _lake(tmp_path / "lake" / "dt=2026-11-20", ids, [t + timedelta(seconds=5) for t in times])
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(_files_to_lake(tmp_path)))
    out = tmp_path / "run.json"
    args = ["--start", "2026-11-20T10:00Z", "--end", "2026-11-20T11:00Z", "--json", str(out)]
    assert main(["run", "--config", str(path), *args]) == 1
    (window,) = json.loads(out.read_text())["windows"]
    assert (window["status"], window["events"]) == ("breach", 0)
    gateway, lake = window["stages"]
    assert (gateway["unreadable"], gateway["unreadable_rate"], gateway["breach"]) == (20, 1.0, True)
    assert (lake["upstream"], lake["orphans"], lake["breach"]) == (0, 20, False)
    assert (
        "gateway: 20 rows without a usable event ID or time, 100.0000% of the rows seen, above "
        "max_unreadable_rate 0.0001: the window cannot be judged ok"
    ) in window["notes"]


def test_a_volume_floor_makes_an_empty_origin_window_a_breach(tmp_path: Path) -> None:
    """min_events {00:00: 5, 11:00: 50}: 30 receipts in [10:00, 11:00) (floor 5: ok), 10
    in [11:00, 12:00) (floor 50: breach, "volume dropped to 10"), none in [12:00, 13:00)
    (floor 50: breach, volume 0). Every receipt reached the lake. `recon check` flags the
    same two windows by counts; without min_events, an empty window is `ok` and says
    events=0 plainly."""
    times = [DAY.replace(hour=10, minute=2 * i) for i in range(30)]
    times += [DAY.replace(hour=11, minute=5 * i) for i in range(10)]
    ids = [f"e{i}" for i in range(40)]
    _log(tmp_path / "gw" / "a.jsonl", [
        {"event_id": e, "received_at": t.isoformat()} for e, t in zip(ids, times, strict=True)
    ])  # fmt: skip
    _lake(tmp_path / "lake" / "dt=2026-11-20", ids, [t + timedelta(seconds=5) for t in times])
    floor = {"loss_rate": 0.0001, "min_events": {"00:00": 5, "11:00": 50}}
    cfg = parse_config(_files_to_lake(tmp_path, thresholds=floor))
    result = api.reconcile(cfg, "2026-11-20T10:00Z", "2026-11-20T13:00Z", now="2026-11-20T20:00Z")
    assert [(w.status, w.events) for w in result.report.windows] == [
        ("ok", 30),
        ("breach", 10),
        ("breach", 0),
    ]
    assert [[n for n in w.notes if "volume" in n] for w in result.report.windows] == [
        [],
        ["gateway: volume dropped to 10 events (min_events 50 for this window)"],
        ["gateway: volume dropped to 0 events (min_events 50 for this window)"],
    ]
    checked = check(cfg, DAY.replace(hour=10), DAY.replace(hour=13))
    assert [(w.origin, w.min_events, w.volume_low) for w in checked] == [
        (30, 5, False),
        (10, 50, True),
        (0, 50, True),
    ]
    plain = parse_config(_files_to_lake(tmp_path, expectations=str(tmp_path / "plain")))
    result = api.reconcile(plain, "2026-11-20T12:00Z", "2026-11-20T13:00Z", now="2026-11-20T20:00Z")
    assert [(w.status, w.events) for w in result.report.windows] == [("ok", 0)]
    assert "OK  events=0" in window_table(result.report.windows[0])
