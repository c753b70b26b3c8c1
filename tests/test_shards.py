"""A window reconciled as K shards by the hash of the event ID and merged equals it unsharded.

Pure tests on in-memory ledgers (tests/helpers.py): the shard filter, the exact
percentile merge, and the merge of partial results, also through their files.
The DAG test (test_airflow_shards.py) runs the same against the real servers.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from recon.config import parse_config
from recon.engine import shards
from recon.engine.loss import compute_many
from recon.engine.phases import Phases
from recon.engine.plan import Span
from recon.engine.reconcile import Engine
from recon.engine.sightings import _picked, picked_from_sorted
from recon.model import SCHEMA_ID_ROWS, BadRecord, LedgerRead, SchemaIds, Shard, StageInput
from recon.sources.sharding import keep, shard_numbers

from .helpers import W, at, ledger

# The IDs of the fixture, by what happens to them (W is 10:00-11:00).
PLANTED = """\
e00-e39: clean, through kafka and the lake, latencies spread over 0.1-40 s
l00-l05: lost at the lake (6 lost)
d00-d02: dead-lettered on the way to the lake (3 dead-lettered)
p00-p03: in the kafka topic at or beyond the loader's committed offset (4 pending)
t00-t04: in the lake after 11:00, within grace (5 late)
u00-u01: retried at the webhook (2 origin duplicates), and u00 twice in the lake (1 duplicate)
o00-o02: in kafka in the window without any receipt (3 orphans at kafka)
k00: sent before the window's start: not in the cohort, found anyway
c00: at kafka 2 s before its receipt (a clock behind: a note)
2 unreadable receipts, 1 unreadable lake row (no usable ID)
kafka's messages: schema id 2 from the first lost event's (10:40:01) on, schema id 1 before
"""


def _fixture() -> list[StageInput]:
    """The ledgers of PLANTED: webhook -> kafka (4 partitions, committed offsets) -> lake."""
    receipts, topic, lake, dead = [], [], [], []
    offsets = [0, 0, 0, 0]

    def send(event: str, when: str, partition: int | None = None) -> None:
        p = partition if partition is not None else sum(map(ord, event)) % 4
        topic.append((event, when, p, offsets[p]))
        offsets[p] += 1

    for i in range(40):
        event = f"e{i:02d}"
        receipts.append((event, f"10:{i:02d}:00"))
        send(event, f"10:{i:02d}:00.{i * 2 + 1:03d}")
        lake.append((event, f"10:{i:02d}:{i:02d}"))
    for i in range(6):
        receipts.append((f"l{i:02d}", f"10:4{i}:00"))
        send(f"l{i:02d}", f"10:4{i}:01")
    for i in range(3):
        receipts.append((f"d{i:02d}", f"10:5{i}:00"))
        send(f"d{i:02d}", f"10:5{i}:01")
        dead.append((f"d{i:02d}", f"10:5{i}:05"))
    for i in range(5):
        receipts.append((f"t{i:02d}", f"10:55:0{i}"))
        send(f"t{i:02d}", f"10:55:1{i}")
        lake.append((f"t{i:02d}", f"11:0{i}:00"))
    for i in range(2):
        receipts += [(f"u{i:02d}", f"10:1{i}:00"), (f"u{i:02d}", f"10:1{i}:09")]
        send(f"u{i:02d}", f"10:1{i}:10")
        lake.append((f"u{i:02d}", f"10:1{i}:30"))
    lake.append(("u00", "10:10:31"))
    for i in range(3):
        send(f"o{i:02d}", f"10:3{i}:00")
        lake.append((f"o{i:02d}", f"10:3{i}:05"))
    receipts.append(("c00", "10:05:00"))
    send("c00", "10:04:58")
    lake.append(("c00", "10:05:30"))
    receipts.append(("k00", "09:59:59"))
    send("k00", "10:00:02")
    lake.append(("k00", "10:00:03"))
    # The pending ones last on partition 3, beyond its committed offset.
    committed = {p: offsets[p] for p in range(4)}
    for i in range(4):
        receipts.append((f"p{i:02d}", f"10:58:0{i}"))
        send(f"p{i:02d}", f"10:58:1{i}", partition=3)
    # Schema ID 2 from 10:40:01 on (the lost, dead-lettered, late and pending events').
    schema = [2 if at(t) >= at("10:40:01") else 1 for _, t, _, _ in topic]
    schema_ids = SchemaIds(
        "events",
        pa.table(
            [
                pa.array([p for _, _, p, _ in topic], pa.int32()),
                pa.array([o for _, _, _, o in topic], pa.int64()),
                pa.array([at(t) for _, t, _, _ in topic], pa.timestamp("us", "UTC")),
                pa.array(schema, pa.int64()),
            ],
            schema=SCHEMA_ID_ROWS,
        ),
    )
    kafka = ledger(topic, "events", committed=committed)
    kafka.schema_ids = schema_ids
    webhook = ledger(receipts, "receipts")
    webhook.bad_records += [
        BadRecord("receipts row at 10:20", "event_id is NULL", time=at("10:20:00")),
        BadRecord("receipts row at 10:21", "event_id is empty", time=at("10:21:00")),
    ]
    parquet = ledger(lake, "lake")
    parquet.bad_records.append(BadRecord("lake/f.parquet", "event_id is null", time=at("10:40:00")))
    return [
        StageInput("webhook", webhook),
        StageInput("kafka", kafka),
        StageInput("lake", parquet, [ledger(dead, "dlq")]),
    ]


def _config():  # the stages' names; their sources are never read here
    stage = {"source": "files", "path": "x"}
    return parse_config(
        {
            "pipeline": "p",
            "stages": [{"name": n, **stage} for n in ("webhook", "kafka", "lake")],
            "dead_letters": [{"name": "dlq", "stage": "lake", **stage}],
        }
    )


NOW = W.end + timedelta(hours=3)
STALLED = W.end + timedelta(days=2)  # past window.stall: the pending events are lost


def _sharded(stages: list[StageInput], count: int, via_files: object = None, now=NOW) -> object:
    """The window merged from `count` shards, each computed from its share of `stages`."""
    cfg = _config()
    partials = []
    for k in range(count):
        shard = Shard(k, count)
        mine = [
            StageInput(s.name, keep(s.ledger, shard), [keep(d, shard) for d in s.dead_letters])
            for s in stages
        ]
        part = shards.partial(cfg, W, shard, mine, now)
        if via_files is not None:
            where = shards.partial_dir(str(via_files), cfg.pipeline, W, shard)
            part = shards.load(shards.save(part, where))
        partials.append(part)
    return shards.merge(cfg, partials[::-1])  # the order shards finish in does not matter


def _unsharded(stages: list[StageInput], now=NOW) -> object:
    return Engine(_config(), now).compute(Span([W], 2_000_000), stages, Phases())[0]


def test_the_fixture_is_what_its_docstring_says() -> None:
    """PLANTED, counted unsharded: the counters the merge must reproduce."""
    result = _unsharded(_fixture())
    webhook, kafka, lake = result.stages
    assert (result.events, webhook.duplicates, webhook.unreadable) == (61, 2, 2)
    assert (kafka.upstream, kafka.arrived, kafka.orphans) == (61, 61, 3)
    assert (lake.lost, lake.dead_lettered, lake.pending, lake.late) == (6, 3, 4, 5)
    assert (lake.duplicates, lake.unreadable, lake.arrived) == (1, 1, 48)
    assert result.missing.num_rows == 13
    assert any("1 of 61 arrived events were seen before" in n for n in result.notes)
    # Schema 1: e (40), u (2), o (3), c00, k00 = 47 messages; cohort events e, u, c00 = 43.
    # Schema 2: l (6), d (3), t (5), p (4) = 18, all cohort events; the 6 l lost at the lake.
    one, two = result.schema_ids
    assert (one.schema_id, one.messages, one.events, one.lost_next) == (1, 47, 43, 0)
    assert (two.schema_id, two.messages, two.events, two.lost_next) == (2, 18, 18, 6)
    stalled = _unsharded(_fixture(), STALLED)
    assert (stalled.stages[2].lost, stalled.stages[2].pending) == (10, 0)
    assert any("4 events in flight past stall" in n for n in stalled.notes)


@pytest.mark.parametrize("now", [NOW, STALLED], ids=["pending", "stalled"])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_a_window_merged_from_its_shards_equals_it_unsharded(count: int, now, tmp_path) -> None:
    """Every counter of every stage and end to end, the latency percentiles, the missing
    events (in order), the notes (unreadable rows, the clock behind, the stall) and the
    messages, events and loss per schema ID: equal
    for 1 to 7 shards, in memory and through the partials' files (latencies
    memory-mapped), 3 hours after the window (4 pending) and 2 days after (4 lost)."""
    whole = _unsharded(_fixture(), now)
    for merged in (
        _sharded(_fixture(), count, now=now),
        _sharded(_fixture(), count, tmp_path, now),
    ):
        assert [asdict(m) for m in merged.stages] == [asdict(m) for m in whole.stages]
        assert asdict(merged.end_to_end) == asdict(whole.end_to_end)
        assert merged.events == whole.events
        assert merged.missing.equals(whole.missing)
        assert merged.notes == whole.notes
        assert merged.schema_ids == whole.schema_ids


def test_every_shard_has_a_share_and_unreadable_rows_count_in_shard_0_only() -> None:
    """Of the 61 cohort events, every shard of 4 gets some; the 2 unreadable receipts and
    the unreadable lake row count in shard 0 and nowhere else."""
    stages = _fixture()
    cfg = _config()
    parts = []
    for k in range(4):
        shard = Shard(k, 4)
        mine = [
            StageInput(s.name, keep(s.ledger, shard), [keep(d, shard) for d in s.dead_letters])
            for s in stages
        ]
        parts.append(shards.partial(cfg, W, shard, mine, NOW))
    assert sum(p.events for p in parts) == 61 and all(p.events for p in parts)
    assert [[m.unreadable for m in p.stages] for p in parts] == [[2, 0, 1]] + [[0, 0, 0]] * 3


HASHES = [
    # ID, shard of 4, why (MD5's first 32 bits; PostgreSQL's md5() gives the same)
    ("a", 1, "0cc175b9... mod 4"),
    ("b", 2, "92eb5ffe... mod 4"),
    ("ü-x", 1, "UTF-8 bytes are hashed"),
    ("0b9a3f8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", 1, "a uuid in its canonical text"),
    ("12345", 2, "an integer in decimal"),
]


@pytest.mark.parametrize(("event_id", "want", "why"), HASHES, ids=[h[2] for h in HASHES])
def test_the_shard_of_an_id_is_a_stable_function_of_its_text(event_id, want, why) -> None:
    assert shard_numbers(pa.array([event_id]), 4).tolist() == [want]


MERGES = [
    # parts (each sorted), why
    ([[]], "nothing arrived: every percentile None"),
    ([[5]], "one event"),
    ([[1, 2, 3], [], [4, 5]], "an empty shard"),
    ([[-7, -3, 0], [-5, 9]], "negative latencies (a clock behind)"),
    ([[2, 2, 2], [2, 2]], "ties only"),
    ([list(range(0, 1000, 2)), list(range(1, 1000, 2))], "interleaved halves"),
    ([[10**15], [-(10**15), 0]], "far apart"),
]


@pytest.mark.parametrize(("parts", "why"), MERGES, ids=[m[1] for m in MERGES])
def test_percentiles_merged_from_sorted_parts_are_the_unsharded_ones(parts, why) -> None:
    arrays = [np.array(p, np.int64) for p in parts]
    assert picked_from_sorted(arrays) == _picked(np.concatenate(arrays))


def test_percentiles_merged_from_many_random_parts() -> None:
    """20 random splits of 10,001 random latencies into 1-8 parts: always the same values."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        values = rng.integers(-(10**6), 10**8, 10_001)
        cuts = np.sort(rng.integers(0, len(values), rng.integers(0, 8)))
        parts = [np.sort(p) for p in np.split(values, cuts)]
        assert picked_from_sorted(parts) == _picked(values.copy())


def test_a_missing_shard_is_refused() -> None:
    """Shards 0 and 2 of 3: the merge names what it has instead of storing a partial sum."""
    cfg = _config()
    stages = _fixture()
    parts = [
        shards.partial(
            cfg,
            W,
            Shard(k, 3),
            [StageInput(s.name, keep(s.ledger, Shard(k, 3)), []) for s in stages],
            NOW,
        )
        for k in (0, 2)
    ]
    with pytest.raises(ValueError, match=r"shards \[0, 2\] of 0..2"):
        shards.merge(cfg, parts)


def test_keep_leaves_an_unsharded_read_alone() -> None:
    read = LedgerRead("x", ledger([("a", "10:00:00")]).table)
    assert keep(read, Shard(0, 1)) is read


def test_compute_many_keeps_sorted_latencies_only_when_asked() -> None:
    stages = _fixture()
    (plain,) = compute_many([W], stages)
    (kept,) = compute_many([W], stages, latencies=True)
    assert plain.latencies_us is None
    assert [len(x) for x in kept.latencies_us] == [61, 48]
    assert all((np.diff(x) >= 0).all() for x in kept.latencies_us)


def test_a_retried_merge_stores_each_window_once(tmp_path) -> None:
    """The DAG's merge task retried: PLANTED's window 10:00 and the hour after it (whose
    cohort is empty: PLANTED's receipts are all before 11:00), 2 shards each. The first
    merge stores 10:00, then finds a partial of 11:00 missing (shared storage lost it): an
    error naming it, 10:00 stored. With the file back, the retry stores 11:00 and passes
    10:00's stored result on without merging it again: one stored result per window (61 and
    0 events, as unsharded), and the windows' directories gone."""
    import yaml

    from recon.airflow_tasks import merge_shards
    from recon.errors import ReconError
    from recon.model import Window
    from recon.store import ResultStore

    config = tmp_path / "pipeline.yaml"
    stage = {"source": "files", "path": "x"}
    config.write_text(
        yaml.safe_dump(
            {
                "pipeline": "p",
                "results": "results.sqlite",
                "stages": [{"name": n, **stage} for n in ("webhook", "kafka", "lake")],
                "dead_letters": [{"name": "dlq", "stage": "lake", **stage}],
            }
        )
    )
    cfg = _config()
    windows = [W, Window(W.end, W.end + timedelta(hours=1))]
    root = str(tmp_path / "partials")
    entries = []
    for w in windows:
        for k in range(2):
            shard = Shard(k, 2)
            mine = [
                StageInput(s.name, keep(s.ledger, shard), [keep(d, shard) for d in s.dead_letters])
                for s in _fixture()
            ]
            saved = shards.save(
                shards.partial(cfg, w, shard, mine, NOW), shards.partial_dir(root, "p", w, shard)
            )
            entries.append(
                {
                    "config": str(config),
                    "start": w.start.isoformat(),
                    "end": w.end.isoformat(),
                    "partials": root,
                    "partial": saved,
                    "now": NOW.isoformat(),
                }
            )
    hidden = Path(entries[-1]["partial"]) / "partial.json"
    kept = hidden.read_text()
    hidden.unlink()
    with pytest.raises(ReconError, match="a shard's partial"):
        merge_shards(entries)
    hidden.write_text(kept)
    merged = merge_shards(entries)
    assert [m["windows"][0]["events"] for m in merged] == [61, 0]
    store = ResultStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
    assert list(store.windows("p", latest=False)["events"]) == [61, 0]  # each stored once
    assert not list((tmp_path / "partials").glob("*/*/*"))
