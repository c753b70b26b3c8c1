"""Plant one day of the incident-like scenario into the real servers, an hour at a time.

Each hour is planned and planted on its own (a 120 M-event day does not fit in
memory as one plan), with its own ID prefix; the truth of each hour's window
is kept and the plan dropped. Hours only interact through rows that land in
the next hour's range (retries, late lake writes), which belong to their own
cohort by ID, so each hour's truth is its window's truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer, TopicPartition

from recon.simulate.plant import (
    Targets,
    append_receipts,
    commit_offsets,
    create_receipts_table,
    create_topic,
    index_receipts,
    produce_dead_letters,
    produce_events,
    write_lake,
)
from recon.simulate.scenario import Scenario, plan
from recon.simulate.truth import truth

DAY = datetime(2026, 11, 2, tzinfo=UTC)
HOURS = 24
PARTITIONS = 6
WINDOW, GRACE, SKEW = timedelta(hours=1), timedelta(minutes=30), timedelta(minutes=1)


def hour_scenario(hour: int, events_per_hour: int) -> Scenario:
    """Hour `hour` of the day: every fault planted, 30 % lake loss from 02:00 to 10:00."""
    return Scenario(
        start=DAY + timedelta(hours=hour),
        hours=1,
        events_per_hour=events_per_hour,
        partitions=PARTITIONS,
        seed=5 + hour,
        kafka_loss=0.00004,
        lake_loss=0.302 if 2 <= hour < 10 else 0.0,
        dead_letters_per_hour=5,
        webhook_retries=0.002,
        producer_duplicates=0.001,
        lake_duplicates=0.0005,
        late_per_hour=3,
        orphans_per_hour=1,
        id_prefix=f"evt{hour:02d}",
    )


@dataclass
class DayTruth:
    """What each of the day's windows must show, and the size of what was planted."""

    events: int  # cohort events (distinct IDs with a receipt)
    windows: list[dict[str, dict[str, int]]]  # per window: stage -> counter -> value
    ledger_rows: dict[str, int]  # rows planted per ledger

    def not_in_lake(self, w: int) -> int:
        """Window w's events with no lake row in its range: the hand-written approach's answer."""
        stages = self.windows[w]
        return stages["webhook"]["arrived"] - stages["lake"]["arrived"]


def plant_day(events: int, t: Targets) -> DayTruth:
    """Plant 24 hours of `events // 24` events each; returns the truth per window."""
    per_hour = events // HOURS
    create_receipts_table(t.pg_url, t.receipts_table)
    create_topic(t.bootstrap, t.topic, PARTITIONS)
    create_topic(t.bootstrap, t.dead_letter_topic, 1)
    windows, rows = [], {"receipts": 0, "kafka": 0, "lake": 0, "dead_letters": 0}
    cohort = 0
    for hour in range(HOURS):
        started = time.perf_counter()
        p = plan(hour_scenario(hour, per_hour))
        append_receipts(p.receipts, t.pg_url, t.receipts_table)
        produce_events(p.kafka, t.bootstrap, t.topic, check=False)
        produce_dead_letters(p.dead_letters, t.bootstrap, t.dead_letter_topic, t.topic)
        write_lake(p.lake, t.lake_path, batch=f"h{hour:02d}")
        (w,) = truth(p, WINDOW, GRACE, SKEW)
        windows.append(w.stages)
        cohort += w.events
        for name, table in [
            ("receipts", p.receipts),
            ("kafka", p.kafka),
            ("lake", p.lake),
            ("dead_letters", p.dead_letters),
        ]:
            rows[name] += table.num_rows
        print(
            f"  hour {hour:02d}: {p.events.num_rows:,} events planted "
            f"in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    index_receipts(t.pg_url, t.receipts_table)
    # The loader consumed everything: its committed offsets are the partitions' ends.
    commit_offsets(t.bootstrap, t.group, t.topic, end_offsets(t.bootstrap, t.topic))
    if sum(end_offsets(t.bootstrap, t.topic).values()) != rows["kafka"]:
        raise RuntimeError(f"{t.topic} does not hold the {rows['kafka']:,} planted messages")
    return DayTruth(cohort, windows, rows)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "recon-bench-offsets"})
    try:
        consumer.list_topics(topic, timeout=30)
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()
