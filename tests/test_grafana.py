"""The shipped Grafana dashboard: every panel's SQL runs on the real results database."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from recon.model import StageMetrics, Window, WindowResult
from recon.sources.base import Thresholds
from recon.store import ResultStore

DASHBOARD = Path(__file__).parent.parent / "grafana" / "recon-dashboard.json"
START = datetime(2026, 11, 10, tzinfo=UTC)


def _sql(raw: str, pipeline: str, start: datetime, end: datetime) -> str:
    """Grafana's macros as the PostgreSQL datasource expands them."""
    raw = raw.replace("$pipeline", pipeline)
    return re.sub(
        r"\$__timeFilter\((\w+)\)",
        lambda m: f"{m.group(1)} BETWEEN '{start.isoformat()}' AND '{end.isoformat()}'",
        raw,
    )


def test_panels_return_the_stored_rows(pg_store: str, unique: str) -> None:
    """Two windows stored: hour 0 clean, hour 1 with 30 of 1000 lost at the lake (breach)."""
    store = ResultStore(pg_store)
    store.upgrade()
    run_id = store.start_run(unique, START, START + timedelta(hours=2), "d")
    th = {
        "kafka": Thresholds(loss_rate=0.001),
        "lake": Thresholds(loss_rate=0.001),
        "end_to_end": Thresholds(loss_rate=0.001),
    }
    for hour, lost in ((0, 0), (1, 30)):
        begin = START + timedelta(hours=hour)
        stages = [
            StageMetrics("webhook", upstream=1000, arrived=1000),
            StageMetrics("kafka", upstream=1000, arrived=1000),
            StageMetrics("lake", upstream=1000, arrived=1000 - lost, lost=lost, breach=lost > 0),
        ]
        e2e = StageMetrics(
            "end_to_end", upstream=1000, arrived=1000 - lost, lost=lost, breach=lost > 0
        )
        store.save_window(
            WindowResult(
                unique,
                Window(begin, begin + timedelta(hours=1)),
                "breach" if lost else "ok",
                1000,
                stages,
                e2e,
                run_id=run_id,
            ),
            th,
        )
    panels = {p["title"]: p for p in json.loads(DASHBOARD.read_text())["panels"]}
    end = START + timedelta(hours=2)
    with store.engine.connect() as conn:

        def rows(title: str, ref: int = 0) -> list[tuple]:
            sql = _sql(panels[title]["targets"][ref]["rawSql"], unique, START, end)
            return [tuple(r) for r in conn.execute(sa.text(sql))]

        loss = rows("Loss rate per stage (latest results)")
        assert [(t.hour, m, v) for t, m, v in loss] == [
            (0, "end_to_end", 0.0),
            (0, "kafka", 0.0),
            (0, "lake", 0.0),
            (1, "end_to_end", 0.03),
            (1, "kafka", 0.0),
            (1, "lake", 0.03),
        ]
        thresholds = rows("Loss rate per stage (latest results)", 1)
        assert {(m, v) for _, m, v in thresholds} == {
            ("kafka threshold", 0.001),
            ("lake threshold", 0.001),
            ("end_to_end threshold", 0.001),
        }
        lost = rows("Lost and dead-lettered events per stage")
        assert [(t.hour, m, v) for t, m, v in lost if v] == [(1, "lake lost", 30)]
        breached = rows("Breached windows")
        assert [(r[0].hour, r[1], r[2], r[4]) for r in breached] == [(1, "lake", 0.03, 30)]
        status = rows("Window status")
        assert [(r[0].hour, r[2], r[3]) for r in status] == [(1, "breach", 1000), (0, "ok", 1000)]
    variable = json.loads(DASHBOARD.read_text())["templating"]["list"][0]["query"]
    with store.engine.connect() as conn:
        assert unique in {r[0] for r in conn.execute(sa.text(variable))}
