"""`recon check`: the count-only intraday early warning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml

from recon.cli import main
from recon.config import load_config
from recon.engine.early_warning import check
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


@pytest.mark.parametrize(
    ("size", "end", "hours", "want"),
    [
        ("1h", "12:23:12.453420", 3, ("09:00:00", "12:00:00")),
        ("1h", "12:00:00", 3, ("09:00:00", "12:00:00")),
        ("1h", "12:23:00", 2.5, ("09:00:00", "12:00:00")),
        ("15m", "12:23:00", 1, ("11:15:00", "12:15:00")),
    ],
)
def test_the_checked_windows_are_whole_windows_on_the_run_grid(
    size: str, end: str, hours: float, want: tuple[str, str]
) -> None:
    """`recon check` at 12:23:12.45 checked [09:23:12.45, 12:23:12.45): windows that match
    no stored window. Now the whole windows before it, as the nightly run cuts them."""
    from recon.config import parse_config
    from recon.engine.early_warning import last_hours

    stages = [{"name": "a", "source": "files", "path": "x"}, {"name": "b", "source": "files",
              "path": "y"}]  # fmt: skip
    cfg = parse_config({"pipeline": "p", "window": {"size": size}, "stages": stages})
    day = "2026-11-21T"
    got = last_hours(cfg, datetime.fromisoformat(f"{day}{end}+00:00"), hours)
    assert got == tuple(datetime.fromisoformat(f"{day}{t}+00:00") for t in want)
