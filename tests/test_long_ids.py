"""Any event ID a source accepts is stored, read back byte-equal and found by its ID.

In the field one origin ID of 10,000 characters failed a window's write to PostgreSQL
("index row requires 10016 bytes": a btree entry holds its whole key, at most 2704 bytes
after compression), so the window was never stored and no alert was sent. Since schema
version 3 the look-up by event ID is a hash index there; SQLite's btree takes any key.
Each test writes a results database of its own: a fresh PostgreSQL database, or a SQLite
file under its tmp_path.
"""

from __future__ import annotations

import json
import random
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import make_url

from recon.cli import main
from recon.engine.loss import compute
from recon.errors import StoreError
from recon.model import StageInput, WindowResult
from recon.sources.base import nul_ids
from recon.store import ResultStore, schema
from recon.store.results import migrations
from recon.web.app import Dashboard

from .helpers import W, ledger

# Quotes, separators, backslashes, line breaks and multi-byte characters: what the COPY's
# CSV must quote and escape. Seeded random text: it does not compress, as the field's ID
# did not (10,000 repeated letters compress to a few bytes and fit any index).
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\"',;\\\n\r\t é日🙂"


def _random_id(length: int, seed: int) -> str:
    return "".join(random.Random(seed).choices(_ALPHABET, k=length))


ID_10K = _random_id(10_000, 1)
ID_100K = _random_id(100_000, 2)
LATEST = migrations("postgresql")[-1][0]


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultStore]:
    """An empty results store (not upgraded): a new PostgreSQL database, or a SQLite file."""
    if request.param == "sqlite":
        yield ResultStore(f"sqlite:///{tmp_path / 'results.sqlite'}")
        return
    with _fresh_database(request.getfixturevalue("pg_url")) as url:
        results = ResultStore(url)
        yield results
        results.engine.dispose()


@contextmanager
def _fresh_database(pg_url: str) -> Iterator[str]:
    """A PostgreSQL database no other test or earlier run has written, dropped afterwards."""
    name = f"recon_ids_{uuid.uuid4().hex[:10]}"
    admin = make_url(pg_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_url(pg_url).set(database=name).render_as_string(False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _save(store: ResultStore, lost: list[str], pipeline: str = "p") -> str:
    """Store a window of W whose origin saw `lost` and "ok"; kafka saw only "ok"."""
    origin = [(event_id, "10:00:00") for event_id in lost] + [("ok", "10:00:01")]
    computed = compute(
        W,
        [
            StageInput("webhook", ledger(origin, "receipts")),
            StageInput("kafka", ledger([("ok", "10:05:00")], "events")),
        ],
    )
    result = WindowResult(
        pipeline,
        W,
        "breach",
        events=computed.events,
        stages=computed.stages,
        end_to_end=computed.end_to_end,
        missing=computed.missing,
        run_id=store.start_run(pipeline, W.start, W.end, "test"),
    )
    return store.save_window(result, {})


def _plans(store: ResultStore, read: Callable[[], object]) -> list[str]:
    """The query plans of the statements over recon_missing_events that `read` ran.

    On PostgreSQL with sequential scans off: a handful of rows would be scanned anyway,
    and the question is whether the index can serve the readers' query at all.
    """
    seen: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if "recon_missing_events" in statement:
            seen.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", capture)
    try:
        read()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", capture)
    assert seen, "the reader ran no query over recon_missing_events"
    plans = []
    with store.engine.connect() as conn:
        for statement, parameters in seen:
            if store.is_sqlite:
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            else:
                conn.exec_driver_sql("SET enable_seqscan = off")
                rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            plans.append("\n".join(str(row[-1]) for row in rows))
        conn.rollback()
    return plans


def _found_by_id(store: ResultStore, window_id: str, event_id: str) -> None:
    """Each reader that looks an event up by its ID finds it, through the ID's index."""
    assert store.missing_event(event_id) == (W.start, W.end)  # explain, api.trace
    records = store.missing_records(event_id)  # the dashboard's event page
    assert (records["window_id"].tolist(), records["stage"].tolist()) == ([window_id], ["kafka"])
    assert records["outcome"].tolist() == ["lost"]
    status, _, page = Dashboard(store).respond(
        "/event/" + urllib.parse.quote(event_id, safe=""), {}
    )
    assert status == "200 OK"
    assert f"<td>{W.start.strftime('%Y-%m-%d %H:%M:%S')}" in page.decode()
    # Equality on the whole ID: a hash match alone (same prefix, one character off) is not.
    assert store.missing_event(event_id[:-1] + ("x" if event_id[-1] != "x" else "y")) is None
    assert store.missing_records(event_id[:-1]).empty
    for plan in _plans(store, lambda: store.missing_event(event_id)) + _plans(
        store, lambda: store.missing_records(event_id)
    ):
        assert "recon_missing_by_event" in plan, plan


def test_long_ids_are_stored_exactly_and_found(store: ResultStore) -> None:
    """A window whose missing events include a 10,000- and a 100,000-character ID (and a
    short one) is stored; the IDs come back byte-equal, the counts exact; each is found."""
    assert store.upgrade() == LATEST
    window_id = _save(store, [ID_10K, ID_100K, "short"])

    stored = store.missing(window_id)
    assert sorted(e.encode() for e in stored["event_id"]) == sorted(
        e.encode() for e in (ID_10K, ID_100K, "short")
    )
    assert stored["stage"].tolist() == ["kafka"] * 3
    assert stored["outcome"].tolist() == ["lost"] * 3
    metrics = store.window_metrics(window_id).set_index("stage")
    assert metrics.loc["kafka", ["upstream", "arrived", "lost"]].tolist() == [4, 1, 3]
    assert metrics.loc["end_to_end", ["upstream", "arrived", "lost"]].tolist() == [4, 1, 3]
    assert store.window(window_id)["events"] == 4
    for event_id in (ID_10K, ID_100K, "short"):
        _found_by_id(store, window_id, event_id)


def test_upgrade_from_version_2(store: ResultStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store at schema version 2 (before the fix) holding a window upgrades to the latest;
    its window is still found by ID, and a window with the long IDs is then stored.

    At version 2 PostgreSQL refuses that window, as in the field: the whole window is
    lost, which shows the test's IDs are long enough to reproduce it."""
    assert store.upgrade(target=2) == 2
    with monkeypatch.context() as m:  # written as recon wrote version 2's windows
        columns = [
            sa.Column(c.name, c.type, primary_key=c.primary_key)
            for c in schema.windows.columns
            if c.name != "notes"
        ]
        m.setattr(schema, "windows", sa.Table("recon_windows", sa.MetaData(), *columns))
        runs = [
            sa.Column(c.name, c.type, primary_key=c.primary_key)
            for c in schema.runs.columns
            if c.name != "heartbeat_at"
        ]
        m.setattr(schema, "runs", sa.Table("recon_runs", sa.MetaData(), *runs))
        old = _save(store, ["old-1", "old-2"], pipeline="before")
        if not store.is_sqlite:
            with pytest.raises(StoreError, match="index row"):
                _save(store, [ID_10K, ID_100K])
            assert store.windows()["window_id"].tolist() == [old]

    assert store.upgrade() == LATEST
    assert store.upgrade() == LATEST  # nothing left to apply
    with store.engine.connect() as conn:
        versions = conn.exec_driver_sql("SELECT version FROM recon_schema_version").scalars()
        assert sorted(versions) == list(range(1, LATEST + 1))
        if store.is_sqlite:
            index = "SELECT sql FROM sqlite_master WHERE name = 'recon_missing_by_event'"
        else:
            index = "SELECT indexdef FROM pg_indexes WHERE indexname = 'recon_missing_by_event'"
        definition = conn.exec_driver_sql(index).scalar_one()
    assert ("(event_id)" if store.is_sqlite else "USING hash (event_id)") in definition

    assert store.missing(old)["event_id"].tolist() == ["old-1", "old-2"]
    assert store.missing_records("old-2")["window_id"].tolist() == [old]
    new = _save(store, [ID_10K, ID_100K])
    assert sorted(store.missing(new)["event_id"]) == sorted([ID_10K, ID_100K])
    assert store.missing_records(ID_100K)["window_id"].tolist() == [new]


def test_a_run_stores_a_window_whose_origin_sent_a_long_id(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`recon run` over a JSON-lines origin holding one 10,000-character ID that the lake
    never got: exit 1 (the breach), not 3; the window and the ID are in PostgreSQL, and
    `recon explain` finds the window by that ID."""
    origin = tmp_path / "gateway"
    origin.mkdir()
    sent = {f"e{i}": W.start + timedelta(minutes=i) for i in range(1, 5)} | {
        ID_10K: W.start + timedelta(minutes=30)
    }
    (origin / "a.jsonl").write_text(
        "".join(
            json.dumps({"event_id": e, "received_at": t.isoformat()}) + "\n"
            for e, t in sent.items()
        )
    )
    lake = tmp_path / "lake"
    lake.mkdir()
    landed = ["e1", "e2", "e3", "e4"]
    pq.write_table(
        pa.table(
            {
                "event_id": landed,
                "ingested_at": pa.array(
                    [sent[e] + timedelta(seconds=5) for e in landed], pa.timestamp("us", "UTC")
                ),
            }
        ),
        lake / "part-0.parquet",
    )
    with _fresh_database(pg_url) as url:
        config = tmp_path / "pipeline.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "pipeline": "long-ids",
                    "window": {"size": "1h"},
                    "results": url,
                    "stages": [
                        {"name": "gateway", "source": "files", "path": str(origin / "*.jsonl")},
                        {"name": "lake", "source": "parquet", "path": str(lake)},
                    ],
                }
            )
        )
        report = tmp_path / "run.json"
        window = ["--start", W.start.isoformat(), "--end", W.end.isoformat()]
        now = ["--now", (W.end + timedelta(days=1)).isoformat()]
        code = main(["run", "--config", str(config), *window, "--json", str(report), *now])
        assert code == 1
        (run,) = json.loads(report.read_text())["windows"]
        assert (run["status"], run["events"]) == ("breach", 5)
        e2e = run["end_to_end"]
        assert [e2e[k] for k in ("upstream", "arrived", "lost")] == [5, 4, 1]

        store = ResultStore(url)
        assert store.missing(run["window_id"])["event_id"].tolist() == [ID_10K]
        capsys.readouterr()
        assert main(["explain", ID_10K, "--config", str(config)]) == 0
        assert capsys.readouterr().out.startswith(f"{ID_10K}: lost at lake")
        store.engine.dispose()


def test_an_id_holding_nul_is_unreadable_and_its_window_is_stored(
    tmp_path: Path, pg_url: str
) -> None:
    """A JSON line's ID "a\\u0000b" (a sender may put U+0000 in it): PostgreSQL's text cannot
    hold it, so storing the window failed and the window was lost. It is an unreadable row
    named by its line now: 3 receipts, e1 and e3 reached the lake, line 2 unreadable (1 of 3,
    over the default max_unreadable_rate: breach), the window stored with no missing ID."""
    origin = tmp_path / "gateway"
    origin.mkdir()
    log = origin / "a.jsonl"
    lines = [("e1", 1), ("a\x00b", 2), ("e3", 3)]
    log.write_text(
        "".join(
            json.dumps({"event_id": e, "received_at": (W.start + timedelta(minutes=m)).isoformat()})
            + "\n"
            for e, m in lines
        )
    )
    lake = tmp_path / "lake"
    lake.mkdir()
    at = [W.start + timedelta(minutes=m, seconds=5) for m in (1, 3)]
    pq.write_table(
        pa.table(
            {"event_id": ["e1", "e3"], "ingested_at": pa.array(at, pa.timestamp("us", "UTC"))}
        ),
        lake / "part-0.parquet",
    )
    with _fresh_database(pg_url) as url:
        config = tmp_path / "pipeline.yaml"
        stages = [
            {"name": "gateway", "source": "files", "path": str(origin / "*.jsonl")},
            {"name": "lake", "source": "parquet", "path": str(lake)},
        ]
        config.write_text(yaml.safe_dump({"pipeline": "nul", "results": url, "stages": stages}))
        report = tmp_path / "run.json"
        window = ["--start", W.start.isoformat(), "--end", W.end.isoformat()]
        now = ["--now", (W.end + timedelta(days=1)).isoformat()]
        assert main(["run", "--config", str(config), *window, "--json", str(report), *now]) == 1
        (run,) = json.loads(report.read_text())["windows"]
        gateway, lake_stage = run["stages"]
        assert (run["status"], gateway["arrived"], gateway["unreadable"]) == ("breach", 2, 1)
        assert (lake_stage["upstream"], lake_stage["lost"]) == (2, 0)
        assert f"gateway:   {log}:2: event_id holds a NUL" in run["notes"]
        store = ResultStore(url)
        try:
            assert store.missing(run["window_id"]).empty
            assert store.notes(run["window_id"]) == run["notes"]
        finally:
            store.engine.dispose()


@pytest.mark.parametrize(
    ("ids", "want"),
    [
        # No zero byte anywhere: no mask at all.
        (pa.chunked_array([pa.array(["e1", "e2"]), pa.array(["e3"])]), None),
        (pa.chunked_array([], pa.string()), None),
        # The NUL is in the buffer but outside the slice: every value matched, none holds one.
        (pa.chunked_array([pa.array(["a\x00b", "c", "d"]).slice(1)]), [False, False]),
        (pa.chunked_array([pa.array(["e1", "a\x00b", None])]), [False, True, False]),
        (pa.chunked_array([pa.array(["x\x00", "y"], pa.large_string())]), [True, False]),
        (pa.chunked_array([pa.array(["x", "y"], pa.large_string())]), None),
    ],
)
def test_nul_ids_marks_exactly_the_ids_holding_nul(
    ids: pa.ChunkedArray, want: list[bool] | None
) -> None:
    """`nul_ids` skips matching when no byte of the text is zero, and is exact otherwise."""
    got = nul_ids(ids)
    assert (None if got is None else got.to_pylist()) == want
