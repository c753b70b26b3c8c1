"""`recon run` end to end on planted pipelines in the real servers."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa
import yaml

from recon import api, cli
from recon.cli import main
from recon.model import COUNTERS, Window
from recon.simulate.plant import Targets, pipeline_config, plant, write_receipts
from recon.simulate.scenario import Scenario, plan
from recon.simulate.truth import truth
from recon.sources import kafka
from recon.store import ResultStore
from recon.timeutil import epoch_us

START = datetime(2026, 11, 20, tzinfo=UTC)
_TS = pa.timestamp("us", tz="UTC")


# The planted day is judged half a day after it: settled, and its in-flight events not yet
# past the stall (24 h), so the lagging consumer's events are pending.
NOW = "2026-11-20T12:00:00Z"


def _run(config: Path, start: str, end: str, *extra: str) -> int:
    args = ["run", "--config", str(config), "--start", start, "--end", end, *extra]
    return main(args if "--now" in extra else [*args, "--now", NOW])


def _scenario() -> Scenario:
    """3 hours x 1000 events, 4 partitions. Hour 0: 1 lost at Kafka (0.1 %, under Kafka's
    0.2 % threshold). Hour 1 adds 5 % lost at the lake (over its 1 % threshold). Every hour:
    2 dead letters, 1 % webhook retries, 1 % producer and 1 % lake duplicates, 2 planted late
    lake writes, 2 orphans. The consumer lags from 02:50: later messages are pending."""
    return Scenario(
        start=START,
        hours=3,
        events_per_hour=1000,
        partitions=4,
        seed=11,
        kafka_loss=0.001,
        lake_loss=lambda h: 0.05 if h == 1 else 0.0,
        dead_letters_per_hour=2,
        webhook_retries=0.01,
        producer_duplicates=0.01,
        lake_duplicates=0.01,
        late_per_hour=2,
        orphans_per_hour=2,
        lag_from=START + timedelta(hours=2, minutes=50),
    )


def _config(tmp_path: Path, targets: Targets, name: str = "pipeline", **overrides: object) -> Path:
    config = pipeline_config(targets, thresholds={"loss_rate": 0.002}, **overrides)
    config["stages"][2]["thresholds"] = {"loss_rate": 0.01}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def planted(pg_url: str, bootstrap: str, unique: str, tmp_path: Path):
    p = plan(_scenario())
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(p, targets)
    return p, targets


def test_every_counter_of_every_window(planted, tmp_path: Path) -> None:
    """All counters of all 3 windows (each stage and end to end) equal the simulator's truth;
    the stored missing IDs are exactly the planted ones; statuses ok / breach / incomplete."""
    p, targets = planted
    config = _config(tmp_path, targets)
    out = tmp_path / "report.json"
    code = _run(config, "2026-11-20T00:00:00Z", "2026-11-20T03:00:00Z", "--json", str(out))
    report = json.loads(out.read_text())
    assert code == 1
    assert report["pipeline"] == targets.name
    assert [w["status"] for w in report["windows"]] == ["ok", "breach", "incomplete"]
    expected = truth(p, timedelta(hours=1), timedelta(minutes=30), timedelta(minutes=1))
    for window, want in zip(report["windows"], expected, strict=True):
        assert window["start"] == want.window.start.isoformat().replace("+00:00", "Z")
        assert window["events"] == want.events == 1000
        assert [s["stage"] for s in window["stages"]] == ["webhook", "kafka", "lake"]
        for stage in window["stages"]:
            got = {k: stage[k] for k in want.stages[stage["stage"]]}
            assert got == want.stages[stage["stage"]], (window["start"], stage["stage"])
            assert stage["unreadable"] == 0
        for name in ("kafka", "lake"):
            stage = next(s for s in window["stages"] if s["stage"] == name)
            assert stage["latency_ms"]["max"] == pytest.approx(want.max_latency_ms[name])
        e2e = window["end_to_end"]
        lost = sum(s["lost"] for s in window["stages"])
        assert e2e["lost"] == lost
        assert e2e["loss_rate"] == lost / 1000
        assert (
            e2e["upstream"]
            == e2e["arrived"] + lost + e2e["dead_lettered"] + e2e["pending"] + e2e["unverifiable"]
        )
    # Hour 1: the lake lost 5 % of what Kafka delivered -> a lake breach; Kafka is fine.
    lake = report["windows"][1]["stages"][2]
    assert (lake["lost"], lake["breach"]) == (50, True)
    assert report["windows"][1]["stages"][1]["breach"] is False

    store = ResultStore(f"sqlite:///{tmp_path / 'recon-results.sqlite'}")
    windows = store.windows(targets.name)
    assert list(windows["status"]) == ["ok", "breach", "incomplete"]
    for (_, row), want in zip(windows.iterrows(), expected, strict=True):
        stored = store.missing(row["window_id"])
        got = {(s, o): set(g["event_id"]) for (s, o), g in stored.groupby(["stage", "outcome"])}
        assert got == {k: v for k, v in want.missing.items() if v}
    metrics = store.stage_metrics(targets.name)
    assert len(metrics) == 3 * 4
    assert metrics.loc[metrics["stage"] == "lake", "lost"].tolist() == [
        w.stages["lake"]["lost"] for w in expected
    ]


def test_rerun_supersedes_and_keeps_history(planted, pg_store: str, tmp_path: Path) -> None:
    """Two runs of the same window into PostgreSQL: one latest result, two in history; the
    missing IDs (COPY path) are stored for both, 50 lost + 2 dead-lettered + 1 at Kafka."""
    p, targets = planted
    config = _config(tmp_path, targets, results=pg_store)
    assert _run(config, "2026-11-20T01:00:00Z", "2026-11-20T02:00:00Z") == 1
    assert _run(config, "2026-11-20T01:00:00Z", "2026-11-20T02:00:00Z") == 1
    store = ResultStore(pg_store)
    latest = store.windows(targets.name)
    history = store.windows(targets.name, latest=False)
    assert (len(latest), len(history)) == (1, 2)
    assert latest.iloc[0]["window_id"] == history.iloc[1]["window_id"]
    want = truth(
        p,
        timedelta(hours=1),
        timedelta(minutes=30),
        timedelta(minutes=1),
        START + timedelta(hours=1),
        START + timedelta(hours=2),
    )[0]
    for window_id in history["window_id"]:
        missing = store.missing(window_id)
        assert len(missing) == sum(len(v) for v in want.missing.values())
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT count(*) FROM recon_stage_metrics_latest WHERE pipeline = :p"),
            {"p": targets.name},
        ).scalar()
    assert rows == 4


def test_source_unreachable_exits_3_and_stores_no_numbers(pg_url, tmp_path: Path, capsys) -> None:
    """Kafka not listening (a closed port), a 24-window day: every window is an error with no
    metrics stored, found by one check of the brokers (timeout_s 3) — the run takes seconds,
    not 24 windows' timeouts — and stderr holds a handful of lines, not hundreds."""
    targets = Targets(pg_url, "127.0.0.1:1", tmp_path / "lake", "unreachable")
    config = pipeline_config(targets)
    for entry in [config["stages"][1], config["dead_letters"][0]]:
        entry["timeout_s"] = 3
    (tmp_path / "lake").mkdir()
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(config))
    # The receipts table must exist so that only Kafka fails.
    plant_receipts = plan(Scenario(start=START, hours=1, events_per_hour=10))
    write_receipts(plant_receipts.receipts, pg_url, targets.receipts_table)
    out = tmp_path / "r.json"
    started = time.monotonic()
    code = _run(path, "2026-11-20T00:00Z", "2026-11-21T00:00Z", "--json", str(out))
    took = time.monotonic() - started
    assert code == 3
    windows = json.loads(out.read_text())["windows"]
    assert [(w["status"], w["stages"]) for w in windows] == [("error", [])] * 24
    assert {w["error"] for w in windows} == {
        f"kafka topic {targets.topic} @ 127.0.0.1:1: brokers 127.0.0.1:1 unreachable within 3s "
        '(KafkaError{code=_TRANSPORT,val=-195,str="Failed to get metadata: Local: Broker '
        'transport failure"})'
    }
    assert took < 15, took
    err = capsys.readouterr().err.splitlines()
    assert len([line for line in err if " INFO recon.run: window " in line]) == 24
    assert len([line for line in err if " INFO recon.run: window " not in line]) <= 5
    store = ResultStore(f"sqlite:///{tmp_path / 'recon-results.sqlite'}")
    assert list(store.windows()["status"]) == ["error"] * 24
    assert store.stage_metrics().empty


def test_results_store_unreachable_exits_3(tmp_path: Path, capsys) -> None:
    targets = Targets(
        "postgresql+psycopg://recon@127.0.0.1:5432/recon", "127.0.0.1:9092", tmp_path, "x"
    )
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump(
            pipeline_config(targets, results="postgresql+psycopg://recon@127.0.0.1:1/recon")
        )
    )
    assert _run(path, "2026-11-20T00:00Z", "2026-11-20T01:00Z") == 3
    assert "results store" in capsys.readouterr().err


def test_results_store_that_rejects_the_schema_exits_3(
    pg_url: str, unique: str, tmp_path: Path, capsys
) -> None:
    """The store's database already has a `recon_runs` table of someone else's: creating
    recon's fails (a ProgrammingError, not a lost connection). That is a store error, exit
    3, naming the table; Python's own exit status for it would be 1, which means breach."""
    with sa.create_engine(pg_url).begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {unique}"))
        conn.execute(sa.text(f"CREATE TABLE {unique}.recon_runs (x INT)"))
    targets = Targets(pg_url, "127.0.0.1:9092", tmp_path, "clash")
    results = f"{pg_url}?options=-csearch_path%3D{unique}"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipeline_config(targets, results=results)))
    assert _run(path, "2026-11-20T00:00Z", "2026-11-20T01:00Z") == 3
    err = capsys.readouterr().err
    assert "results store" in err and "recon_runs" in err


def test_api_returns_dataframes(planted, tmp_path: Path) -> None:
    """The notebook API on hour 1: 1000 events; 50 lost + 2 dead-lettered at the lake."""
    _, targets = planted
    cfg = api.load(_config(tmp_path, targets))
    result = api.reconcile(cfg, "2026-11-20T01:00:00Z")
    frame = result.stage_metrics()
    assert list(frame["stage"]) == ["webhook", "kafka", "lake", "end_to_end"]
    assert set(COUNTERS) <= set(frame.columns)
    lake = frame[frame["stage"] == "lake"].iloc[0]
    assert (lake["lost"], lake["dead_lettered"]) == (50, 2)
    missing = result.missing(stage="lake", outcome="lost")
    assert len(missing) == 50 and missing["last_stage"].eq("kafka").all()


def test_chunked_pipelined_and_parallel_runs_give_the_same_report(
    planted, tmp_path: Path, monkeypatch
) -> None:
    """The planted 3 hours reconciled three ways give identical windows: the default (first
    window alone, then one read of the rest), every window its own read (a read budget of one
    row: oversized windows, read one after the other), and that with two processes. Only the
    run and window IDs differ. `--timings` names every phase. The same four ways give
    identical 15-minute windows, whose every counter equals the simulator's truth."""
    from recon.engine import carry, reading

    p, targets = planted
    one_row = {"max_rows_per_read": 1}

    def report(name: str, *extra: str, config: Path) -> list[dict]:
        out = tmp_path / f"{name}.json"
        code = _run(
            config, "2026-11-20T00:00:00Z", "2026-11-20T03:00:00Z", "--json", str(out), *extra
        )
        assert code == 1
        windows = json.loads(out.read_text())["windows"]
        for w in windows:
            del w["window_id"], w["run_id"]
        return windows

    config = _config(tmp_path, targets)
    whole = report("whole", "--timings", str(tmp_path / "timings.json"), config=config)
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert (timings["jobs"], timings["windows"]) == (1, 3)
    assert set(timings["phases"]) == {
        *(f"read {name}" for name in ("webhook", "kafka", "lake", "dlq")),
        "read (all sources)",
        "compute",
        "read dead-letter errors",
        "expectations",
        "store",
        "data docs",
    }
    tight = _config(tmp_path, targets, "tight", resources=one_row)
    assert report("one-window-reads", config=tight) == whole
    assert report("two-processes", "--jobs", "2", config=tight) == whole
    # 15-minute windows, whose 31-minute grace and skew ranges span three windows: every
    # read after the first takes over rows of the one before (in chunks; one window a
    # read; and with two processes, where a worker takes window 1 alone while the first
    # one sizes the rest, and then windows over the read budget go two by two).
    window = {"size": "15m", "grace": "30m", "settle": "2h", "skew": "1m"}
    config = _config(tmp_path, targets, "quarters", window=window)
    tight = _config(tmp_path, targets, "quarters-tight", window=window, resources=one_row)
    carried = []

    def remainder(kept: object, want: object) -> object:
        carried.append(kept is not None)
        return carry.remainder(kept, want)

    monkeypatch.setattr(reading, "remainder", remainder)
    quarters = report("quarters", config=config)
    # After the first window, the other 11 fit one read: it carries for all 4 ledgers.
    assert carried.count(True) == 4
    quarter_truth = truth(p, timedelta(minutes=15), timedelta(minutes=30), timedelta(minutes=1))
    assert len(quarters) == len(quarter_truth) == 12
    for window, want in zip(quarters, quarter_truth, strict=True):
        assert window["events"] == want.events
        for stage in window["stages"]:
            got = {k: stage[k] for k in want.stages[stage["stage"]]}
            assert got == want.stages[stage["stage"]], (window["start"], stage["stage"])
    assert report("quarters-two-processes", "--jobs", "2", config=config) == quarters
    carried.clear()
    assert report("quarters-one-window-reads", config=tight) == quarters
    assert carried.count(True) == 4 * 11  # every window's read after the first
    both = report("quarters-one-window-reads-two-processes", "--jobs", "2", config=tight)
    assert both == quarters
    expected = truth(p, timedelta(hours=1), timedelta(minutes=30), timedelta(minutes=1))
    assert [w["events"] for w in whole] == [t.events for t in expected]


def test_kafka_records_out_of_timestamp_order(
    pg_url: str, bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """`_scenario`'s pipeline, with every Kafka record stored up to 4 minutes out of timestamp
    order (within out_of_order's default 5). A read of each hour's downstream range holds
    every record stamped in it, once (read only up to the first record stamped at its end,
    as before, it missed those stored after that one). Read in one chunk, one window a read (each
    carrying rows from the read before) and as 15-minute windows, every counter of every
    window equals the simulator's truth (pending too: the committed offsets stop at the
    first record stored that is stamped 02:50 or later)."""

    p = plan(dataclasses.replace(_scenario(), kafka_disorder_ms=240_000))
    part, stamps = p.kafka["partition"].to_numpy(), p.kafka["ts_ms"].to_numpy()
    behind = [  # in offset order, how far each partition's stamps fall behind the newest
        (np.maximum.accumulate(t) - t).max() for t in (stamps[part == i] for i in range(4))
    ]
    assert all(200_000 < ms <= 240_000 for ms in behind)  # out of order indeed
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(p, targets)
    topic = kafka.Config(name="kafka", source="kafka", bootstrap=bootstrap, topic=targets.topic)
    for hour in range(3):  # a read holds every record stamped in its range, once
        start = START + timedelta(hours=hour, minutes=-1)
        span = Window(start, start + timedelta(hours=1, minutes=31))
        got = kafka.read(topic, span).table
        t = got["stage_time"]
        got = got.filter(
            pc.and_(
                pc.greater_equal(t, pa.scalar(span.start, _TS)),
                pc.less(t, pa.scalar(span.end, _TS)),
            )
        )
        lo, hi = (epoch_us(t) // 1000 for t in (span.start, span.end))
        planted = p.kafka.filter(
            pc.and_(pc.greater_equal(p.kafka["ts_ms"], lo), pc.less(p.kafka["ts_ms"], hi))
        )
        assert sorted(got["event_id"].to_pylist()) == sorted(planted["event_id"].to_pylist())

    def windows(config: Path, name: str) -> list[dict]:
        out = tmp_path / f"{name}.json"
        code = _run(config, "2026-11-20T00:00:00Z", "2026-11-20T03:00:00Z", "--json", str(out))
        assert code == 1
        return json.loads(out.read_text())["windows"]

    def assert_truth(got: list[dict], size: timedelta) -> None:
        want = truth(p, size, timedelta(minutes=30), timedelta(minutes=1))
        assert len(got) == len(want)
        for window, expected in zip(got, want, strict=True):
            assert window["events"] == expected.events
            for stage in window["stages"]:
                counters = {k: stage[k] for k in expected.stages[stage["stage"]]}
                assert counters == expected.stages[stage["stage"]], (window["start"], stage)

    hourly = _config(tmp_path, targets)
    assert_truth(windows(hourly, "chunked"), timedelta(hours=1))
    one_a_read = _config(tmp_path, targets, "one-a-read", resources={"max_rows_per_read": 1})
    assert_truth(windows(one_a_read, "one-a-read"), timedelta(hours=1))
    window = {"size": "15m", "grace": "30m", "settle": "2h", "skew": "1m"}
    quarters = _config(tmp_path, targets, window=window)
    assert_truth(windows(quarters, "quarters"), timedelta(minutes=15))


def test_an_unforeseen_failure_exits_3_with_its_traceback(monkeypatch, capsys) -> None:
    """A bug inside a command is an error (3), shown in full: never exit 1 (breach)."""

    def broken(args: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "run", broken)
    assert _run(Path("p.yaml"), "2026-11-20T00:00Z", "2026-11-20T01:00Z") == 3
    err = capsys.readouterr().err
    assert "ZeroDivisionError: a bug" in err and "Traceback" in err
