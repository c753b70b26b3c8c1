"""`recon explain`: one event's path, on planted events of every fate."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import yaml

from recon import api
from recon.cli import main
from recon.config import load_config
from recon.engine.explain import explain
from recon.model import Window
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import (
    DEAD_LETTERED,
    DELIVERED,
    LOST_KAFKA,
    LOST_LAKE,
    PENDING,
    Scenario,
    plan,
)

START = datetime(2026, 11, 25, tzinfo=UTC)


def _us(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000


WINDOW = Window(START, START + timedelta(hours=1))


def test_explain_every_fate(pg_url, bootstrap, unique, tmp_path: Path) -> None:
    """One hour x 500 events: 1 % lost at Kafka, 5 % at the lake, 3 dead letters, and the
    consumer lags from 00:50 (pending). One event of each fate is traced: the verdict names
    the hop, and the sightings list exactly the ledgers that hold it (with the dead letter's
    error header)."""
    p = plan(
        Scenario(
            start=START,
            hours=1,
            events_per_hour=500,
            seed=21,
            kafka_loss=0.01,
            lake_loss=0.05,
            dead_letters_per_hour=3,
            lag_from=START + timedelta(minutes=50),
        )
    )
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(p, targets)
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(targets)))
    cfg = load_config(config)
    ids = p.events["event_id"].to_numpy(zero_copy_only=False)
    fate = p.events["fate"].to_numpy()

    def first(f: int) -> str:
        return str(ids[np.flatnonzero(fate == f)[0]])

    expected = {
        DELIVERED: ("delivered", None, ["webhook", "kafka", "lake"]),
        LOST_KAFKA: ("lost", "kafka", ["webhook"]),
        LOST_LAKE: ("lost", "lake", ["webhook", "kafka"]),
        DEAD_LETTERED: ("dead_lettered", "lake", ["webhook", "kafka", "lake"]),
        PENDING: ("pending", "lake", ["webhook", "kafka"]),
    }
    for f, (verdict, vanished, stages) in expected.items():
        trace = explain(cfg, first(f), WINDOW)
        assert (trace.verdict, trace.vanished_at) == (verdict, vanished), first(f)
        assert [s.stage for s in trace.sightings] == stages
    dead = explain(cfg, first(DEAD_LETTERED), WINDOW).sightings[-1]
    assert (dead.sink, dead.error) == ("dlq", "SerializationError: unknown schema id 42")
    kafka_row = explain(cfg, first(LOST_LAKE), WINDOW).sightings[1]
    assert kafka_row.location.startswith(f"{targets.topic}[")

    # After a stored run, a missing event is found without --around (CLI and API).
    assert (
        main(
            [
                "run",
                "--config",
                str(config),
                "--start",
                WINDOW.start.isoformat(),
                "--end",
                WINDOW.end.isoformat(),
            ]
        )
        == 1
    )
    out = tmp_path / "trace.json"
    assert main(["explain", first(LOST_LAKE), "--config", str(config), "--json", str(out)]) == 0
    traced = json.loads(out.read_text())
    assert (traced["verdict"], traced["vanished_at"]) == ("lost", "lake")
    # Re-run as half hours: the stored window [00:00, 00:30) supersedes the hour and is the
    # one traced, not the hour [00:00, 01:00) of the config's size.
    early = ids[
        (fate == LOST_LAKE) & (p.events["origin_us"].to_numpy() < _us(START) + 1_800_000_000)
    ]
    halves = tmp_path / "halves.yaml"
    data = yaml.safe_load(config.read_text())
    data["window"]["size"] = "30m"
    halves.write_text(yaml.safe_dump(data))
    half = ["--start", "2026-11-24T23:30:00Z", "--end", "2026-11-25T00:30:00Z"]
    assert main(["run", "--config", str(halves), *half, "--now", "2026-11-25T12:00:00Z"]) == 1
    assert main(["explain", str(early[0]), "--config", str(config), "--json", str(out)]) == 0
    traced = json.loads(out.read_text())
    assert traced["window"] == {"start": "2026-11-25T00:00:00Z", "end": "2026-11-25T00:30:00Z"}
    assert (traced["verdict"], traced["vanished_at"]) == ("lost", "lake")
    summary, frame = api.trace(cfg, first(LOST_KAFKA), around="2026-11-25T00:30:00Z")
    assert summary == f"{first(LOST_KAFKA)}: lost at kafka"
    assert list(frame["stage"]) == ["webhook"]
    assert explain(cfg, "no-such-event", WINDOW).verdict == "unseen"


def test_a_trace_says_when_the_live_sources_contradict_the_stored_result(
    tmp_path: Path, capsys
) -> None:
    """The run stored e2 as lost at the lake. Then the loader reprocessed it (its lake row
    written after the run): the trace says when it read the sources, and warns that they
    now say delivered while the store says lost — it used to show "delivered" as if it
    were the stored story."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    gw = tmp_path / "gw"
    gw.mkdir()
    t0 = datetime(2026, 11, 20, 10, tzinfo=UTC)
    (gw / "a.jsonl").write_text(
        "".join(
            json.dumps({"event_id": e, "received_at": (t0 + timedelta(minutes=m)).isoformat()})
            + "\n"
            for e, m in (("e1", 1), ("e2", 2))
        )
    )
    lake = tmp_path / "lake" / "dt=2026-11-20"
    lake.mkdir(parents=True)

    def landed(ids: list[str], name: str) -> None:
        at = [t0 + timedelta(minutes=5)] * len(ids)
        pq.write_table(
            pa.table({"event_id": ids, "ingested_at": pa.array(at, pa.timestamp("us", "UTC"))}),
            lake / name,
        )

    landed(["e1"], "part-0.parquet")
    config = tmp_path / "p.yaml"
    stages = [
        {"name": "gateway", "source": "files", "path": str(gw / "*.jsonl")},
        {"name": "lake", "source": "parquet", "path": str(tmp_path / "lake")},
    ]
    config.write_text(yaml.safe_dump({"pipeline": "p", "stages": stages}))
    run = ["run", "--config", str(config), "--start", "2026-11-20T10:00Z"]
    assert main([*run, "--end", "2026-11-20T11:00Z", "--now", "2026-11-21T00:00Z"]) == 1
    capsys.readouterr()
    assert main(["explain", "e2", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(
        "e2: lost at lake   (window [2026-11-20T10:00:00Z, 2026-11-20T11:00:00Z); "
        "live sources read at "
    )
    assert not any("warning" in line for line in lines)
    landed(["e2"], "part-1.parquet")
    assert main(["explain", "e2", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("e2: delivered   (window")
    assert lines[1] == (
        "  warning: the live sources disagree with the stored result of "
        "[2026-11-20T10:00:00Z, 2026-11-20T11:00:00Z) (lost at lake): they now say "
        "delivered. Their data was replanted, rewritten or expired since the run; the stored "
        "numbers are as the run computed them"
    )
