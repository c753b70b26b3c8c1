"""The nightly DAG shards its big windows: 4 mapped tasks per window, merged into one.

Run with `dag.test()` in its own process (tests/airflow_runner.py), against the
real PostgreSQL and Kafka, as tests/test_airflow.py runs the DAGs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import yaml

from recon.config import load_config
from recon.engine.runner import run
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan
from recon.simulate.truth import truth
from recon.sources.sql import conninfo
from recon.store import ResultStore

from .test_airflow import DAY1, DAY2, _airflow, airflow_home  # noqa: F401 (a fixture)

BUSY = [DAY1 + timedelta(hours=10), DAY1 + timedelta(hours=11)]
COUNTERS = ["upstream", "arrived", "lost", "dead_lettered", "pending", "unverifiable", "late",
            "duplicates", "orphans", "unreadable"]  # fmt: skip


def _scenario() -> Scenario:
    """10:00-12:00 of day 1, 700 events an hour with every fault planted."""
    return Scenario(
        start=BUSY[0],
        hours=2,
        events_per_hour=700,
        partitions=4,
        seed=29,
        kafka_loss=0.01,
        lake_loss=0.05,
        dead_letters_per_hour=6,
        webhook_retries=0.02,
        producer_duplicates=0.02,
        lake_duplicates=0.02,
        late_per_hour=5,
        orphans_per_hour=3,
        lag_from=BUSY[1] + timedelta(minutes=50),
    )


def _plain(frame):
    """NaN (a latency no event has) as None: NaN equals nothing, not even itself."""
    return frame.astype(object).where(frame.notna(), None)


def _stored(store: ResultStore, pipeline: str) -> dict[datetime, dict[str, object]]:
    """Per stored window of the busy hours: status, events, metrics, notes, missing events."""
    out = {}
    windows = store.windows(pipeline)
    for row in windows.itertuples():
        start = row.window_start.to_pydatetime()
        if start not in BUSY:
            continue
        metrics = _plain(store.window_metrics(row.window_id).drop(columns=["window_id"]))
        missing = _plain(store.missing(row.window_id).drop(columns=["window_id"]))
        out[start] = {
            "status": row.status,
            "events": row.events,
            "metrics": metrics.to_dict("records"),
            "notes": store.notes(row.window_id),
            "missing": missing.sort_values(["stage", "event_id"]).to_dict("records"),
        }
    return out


def test_a_window_reconciled_as_4_mapped_shards_equals_it_unsharded(
    airflow_home,  # noqa: F811
    pg_url,
    bootstrap,
    unique,
    tmp_path,
) -> None:
    """Day 1 has traffic from 10:00 to 12:00 only: 700 events an hour with 1 % Kafka loss,
    5 % lake loss, 6 dead letters an hour, 2 % webhook retries, producer and lake
    duplicates, 5 late lake writes and 3 orphans an hour, the loader's group stuck from
    11:50 (in flight, past `window.stall` three days later: lost, with a note), and one
    receipt with a NULL event_id at 10:20 (unreadable). With `shards: {above_events: 500,
    count: 4}` the plan counts the receipts: 10:00 and 11:00 (over 700 rows each) become 4
    mapped shard tasks each (8), the other 22 windows 4 tasks of up to 6 (12 reconcile tasks,
    all successful), and the merge task stores the two windows merged.

    Stored, each busy window equals the same window reconciled unsharded (`recon run`'s
    engine, another store) counter for counter at every stage and end to end, latency
    percentiles included, with the same status, notes and missing events; and it is the
    simulator's truth (the unreadable receipt and the stalled events aside, stated here:
    1 unreadable at the webhook at 10:00, the truth's pending charged as lost). The shards'
    partial files are gone once stored."""
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    planned = plan(_scenario())
    plant(planned, targets)
    with psycopg.connect(conninfo(pg_url)) as conn:
        conn.execute(
            f'INSERT INTO "{targets.receipts_table}" (event_id, received_at) VALUES (NULL, %s)',
            (BUSY[0] + timedelta(minutes=20),),
        )
    shards = {"above_events": 500, "count": 4, "directory": "partials"}
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        yaml.safe_dump(pipeline_config(targets, results="results.sqlite", shards=shards))
    )
    night = _airflow(
        airflow_home,
        "recon_nightly",
        DAY2.isoformat(),
        env={"AIRFLOW_VAR_RECON_CONFIGS": json.dumps([str(config)])},
    )
    assert night["tasks"]["reconcile"] == ["success"] * 12, night
    assert night["tasks"]["merge"] == ["success"]
    assert night["tasks"]["gate"] == ["success"]
    sharded = _stored(ResultStore(f"sqlite:///{tmp_path / 'results.sqlite'}"), unique)
    assert list(sharded) == BUSY
    assert not list((tmp_path / "partials").glob("*/*/*"))  # every window's partials deleted

    whole_config = tmp_path / "whole.yaml"
    whole_config.write_text(yaml.safe_dump(pipeline_config(targets, results="whole.sqlite")))
    store = ResultStore(f"sqlite:///{tmp_path / 'whole.sqlite'}")
    report = run(load_config(whole_config), BUSY[0], BUSY[1] + timedelta(hours=1), store)
    assert [w.status for w in report.windows] == ["breach", "breach"]
    whole = _stored(store, unique)
    for start in BUSY:
        for mine, theirs in zip(sharded[start]["metrics"], whole[start]["metrics"], strict=True):
            differ = {k: (v, theirs[k]) for k, v in mine.items() if theirs[k] != v}
            assert not differ, (start, mine["stage"], differ)
        assert sharded[start] == whole[start], start

    for start, want in zip(BUSY, truth(planned, timedelta(hours=1), timedelta(minutes=30),
                                       timedelta(minutes=1)), strict=True):  # fmt: skip
        got = {m["stage"]: m for m in sharded[start]["metrics"]}
        assert sharded[start]["events"] == want.events
        for stage, counters in want.stages.items():
            expected = dict(counters)
            if stage == "lake":  # in flight three days after: charged as lost
                expected["lost"] = expected.get("lost", 0) + expected.get("pending", 0)
                expected["pending"] = 0
            if stage == "webhook":
                expected["unreadable"] = 1 if start == BUSY[0] else 0
            assert {c: got[stage][c] for c in expected if c in COUNTERS} == {
                c: v for c, v in expected.items() if c in COUNTERS
            }, (start, stage)
    assert any("in flight past stall" in n for n in sharded[BUSY[1]]["notes"])


def test_the_plan_shards_only_windows_over_the_size(tmp_path: Path, pg_url, unique) -> None:
    """Receipts: 30 rows at 10:00, 10 at 11:00. With above_events 20 and count 3 the plan
    has 3 shard tasks for 10:00, every one judged at the plan's `now`, and 11:00 whole."""
    from recon.airflow_tasks import plan as plan_night

    with psycopg.connect(conninfo(pg_url)) as conn:
        conn.execute(f'CREATE TABLE "{unique}" (event_id text, received_at timestamptz)')
        conn.execute(
            f"""INSERT INTO "{unique}" SELECT 'e' || i, '2026-11-20 10:00:00+00'::timestamptz
            + i * interval '1 minute' FROM generate_series(0, 29) i UNION ALL
            SELECT 'f' || i, '2026-11-20 11:00:00+00'::timestamptz + i * interval '1 minute'
            FROM generate_series(0, 9) i"""
        )
    config = tmp_path / "p.yaml"
    stages = [
        {"name": "a", "source": "sql", "url": pg_url, "table": unique},
        {"name": "b", "source": "files", "path": "x"},
    ]
    config.write_text(
        yaml.safe_dump(
            {
                "pipeline": "p",
                "results": "r.sqlite",
                "stages": stages,
                "shards": {"above_events": 20, "count": 3, "directory": "parts"},
            }
        )
    )
    now = datetime(2026, 11, 21, 3, tzinfo=UTC)
    start = datetime(2026, 11, 20, 10, tzinfo=UTC)
    items = plan_night([str(config)], start, start + timedelta(hours=2), now=now)
    assert [(i["start"][11:16], i["end"][11:16], i.get("shard")) for i in items] == [
        ("11:00", "12:00", None),
        ("10:00", "11:00", "0"),
        ("10:00", "11:00", "1"),
        ("10:00", "11:00", "2"),
    ]
    assert {i["now"] for i in items[1:]} == {"2026-11-21T03:00:00Z"}
    assert {Path(i["partials"]).parent for i in items[1:]} == {tmp_path / "parts"}
