"""A fifth source kind, defined here and registered, runs through the engine untouched.

The kind reads JSON-lines files (`{"id": ..., "at": ...}` per line) with
pyarrow: one module's worth of code plus `config.register_kind`, no line of the
engine, the config or the CLI changed for it.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pyarrow.compute as pc
import pyarrow.json as pj
import yaml

from recon.cli import main
from recon.config import load_config, register_kind
from recon.engine.runner import run
from recon.model import LedgerRead, Window
from recon.sources.base import SourceConfig, in_window, ledger_table, utc_times
from recon.sources.kind import Kind

from .helpers import at


class JsonLinesConfig(SourceConfig):
    """A JSON-lines ledger: one object per line with the event's ID and time."""

    source: Literal["jsonlines"]
    path: str
    time: str = "at"


def _read(cfg: JsonLinesConfig, window: Window) -> LedgerRead:
    table = pj.read_json(cfg.path)
    times, _ = utc_times(table[cfg.time], cfg.time, cfg.path)  # the test writes no bad times
    keep = in_window(times, window)
    ids, times = table[cfg.id].filter(keep), times.filter(keep)
    return LedgerRead(f"json lines {cfg.path}", ledger_table(ids, times, cfg.path))


JSONLINES = Kind("jsonlines", JsonLinesConfig, _read, paths=("path",))


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.write_text(
        "".join(json.dumps({"id": i, "at": f"2026-11-20T{t}Z"}) + "\n" for i, t in rows)
    )


def test_a_registered_kind_is_reconciled_like_the_built_in_ones(tmp_path: Path) -> None:
    """Origin: 100 events, e0..e99, one a minute from 10:00:00 (60 in [10:00, 11:00), 40
    in [11:00, 12:00)). Downstream: all but e7 and e70, one second later; e99 twice. Hourly
    windows, both relative paths in the config file: 10:00 has 60 events, 1 lost (e7);
    11:00 has 40, 1 lost (e70), 1 duplicate (e99)."""
    register_kind(JSONLINES)
    origin = [
        (f"e{i}", (at("10:00:00") + timedelta(minutes=i)).strftime("%H:%M:%S")) for i in range(100)
    ]
    later = [(i, (at(f"{t}") + timedelta(seconds=1)).strftime("%H:%M:%S")) for i, t in origin]
    _write(tmp_path / "origin.jsonl", origin)
    _write(tmp_path / "copy.jsonl", [r for r in later if r[0] not in ("e7", "e70")] + [later[99]])
    config = tmp_path / "pipeline.yaml"
    stage = {"source": "jsonlines", "id": "id"}
    config.write_text(
        yaml.safe_dump(
            {
                "pipeline": "jsonlines",
                "window": {"size": "1h"},
                "thresholds": {"loss_rate": 0.5},
                "stages": [
                    {"name": "origin", "path": "origin.jsonl", **stage},
                    {"name": "copy", "path": "copy.jsonl", **stage},
                ],
            }
        )
    )
    cfg = load_config(config)
    assert cfg.stages[0].path == str(tmp_path / "origin.jsonl")  # type: ignore[attr-defined]
    report = run(cfg, at("10:00:00"), at("12:00:00"), None, now=at("12:00:00") + timedelta(days=1))
    got = [(w.events, w.stages[1].lost, w.stages[1].duplicates, w.status) for w in report.windows]
    assert got == [(60, 1, 0, "ok"), (40, 1, 1, "ok")]
    missing = [
        pc.unique(w.missing["event_id"]).to_pylist()
        for w in report.windows
        if w.missing is not None
    ]
    assert missing == [["e7"], ["e70"]]
    # And through the CLI, which knows nothing of the kind either.
    code = main(
        [
            "run",
            "--config",
            str(config),
            "--start",
            "2026-11-20T10:00Z",
            "--end",
            "2026-11-20T12:00Z",
            "--no-store",
            "--quiet",
            "--now",
            "2026-11-21T12:00Z",
        ]
    )
    assert code == 0
