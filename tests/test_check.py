"""`recon check`: the count-only intraday early warning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from recon.cli import main
from recon.config import load_config
from recon.engine.check import check
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan

START = datetime(2026, 11, 21, tzinfo=UTC)


def _in(table: pa.Table, column: str, start: datetime, end: datetime) -> int:
    values = table[column]
    if pa.types.is_integer(values.type):  # Kafka timestamps in ms
        values = pc.cast(pc.multiply(values, 1000), pa.timestamp("us", tz="UTC"))
    mask = pc.and_(
        pc.greater_equal(values, pa.scalar(start, values.type)),
        pc.less(values, pa.scalar(end, values.type)),
    )
    return pc.sum(mask).as_py() or 0


def test_flags_a_30_percent_drop_and_stays_quiet_on_clean_traffic(
    pg_url: str, bootstrap: str, unique: str, tmp_path: Path, capsys
) -> None:
    """4 hours x 2000 events; the lake loader loses 30 % in hours 2 and 3 only (plus 3 dead
    letters an hour, 1 % webhook and producer retries). The check flags exactly the lake
    hop of hours 2 and 3; every count equals the planted rows of its ledger in the hour."""
    p = plan(
        Scenario(
            start=START,
            hours=4,
            events_per_hour=2000,
            seed=3,
            lake_loss=lambda h: 0.3 if h >= 2 else 0.0,
            dead_letters_per_hour=3,
            webhook_retries=0.01,
            producer_duplicates=0.01,
        )
    )
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(p, targets)
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(targets)))
    windows = check(load_config(config), START, START + timedelta(hours=4))
    assert [[h.stage for h in w.flagged] for w in windows] == [[], [], ["lake"], ["lake"]]
    for h, w in enumerate(windows):
        lo, hi = START + timedelta(hours=h), START + timedelta(hours=h + 1)
        assert w.counts == {
            "webhook": _in(p.receipts, "received_at", lo, hi),
            "kafka": _in(p.kafka, "ts_ms", lo, hi),
            "lake": _in(p.lake, "ingested_at", lo, hi),
            "dlq": _in(p.dead_letters, "ts_ms", lo, hi),
        }
        lake = w.hops[1]
        assert (lake.upstream, lake.arrived, lake.dead_lettered) == (
            w.counts["kafka"],
            w.counts["lake"],
            w.counts["dlq"],
        )
    c = windows[2].counts
    assert windows[2].hops[1].drop == 1 - (c["lake"] + c["dlq"]) / c["kafka"]
    assert windows[2].hops[1].drop > 0.25  # 30 % of events lost, minus producer duplicates

    quiet = [
        "check",
        "--config",
        str(config),
        "--end",
        (START + timedelta(hours=2)).isoformat(),
        "--hours",
        "2",
    ]
    assert main(quiet) == 0
    loud = [
        "check",
        "--config",
        str(config),
        "--end",
        (START + timedelta(hours=4)).isoformat(),
        "--hours",
        "1",
    ]
    assert main(loud) == 1
    assert "DROP" in capsys.readouterr().out
