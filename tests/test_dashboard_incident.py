"""The dashboard during the demo's incident, as on-call sees it in a browser.

`recon demo` plants 12 hours x 200 events: hours 2-9 lose ~30 % at the lake, the last
window has events in flight. Two more pipelines share the store: one ok, one whose
window could not be read. The pages must say so in words, colours and numbers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from wsgiref.simple_server import make_server

import pandas as pd
import pytest

from recon.model import StageInput
from recon.simulate.demo import INCIDENT_HOURS, run_demo
from recon.store import ResultStore
from recon.web.app import Dashboard
from recon.web.charts import pct
from recon.web.views import headline, place

from .conftest import missing_in_ci_fails
from .test_dashboard import ARTIFACTS, CHROMIUM, FLAGS

EVENTS_PER_HOUR = 200
SINCE = "2026-11-01T00:00Z"  # the range covers the demo and the two small pipelines


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    if not os.path.exists(CHROMIUM):
        missing_in_ci_fails("Debian's chromium is not installed (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def incident(pg_url: str, bootstrap: str, tmp_path_factory) -> Iterator[tuple]:  # type: ignore[no-untyped-def]
    """The demo's store (plus an ok and an errored pipeline) served on a free port."""
    import uuid

    workdir = tmp_path_factory.mktemp("incident")
    name = f"t{uuid.uuid4().hex[:10]}"
    assert run_demo(workdir, EVENTS_PER_HOUR, pg_url, bootstrap, name=name) == 1
    store = ResultStore(f"sqlite:///{workdir / 'results.sqlite'}")
    _store_other_pipelines(store)
    server = make_server("127.0.0.1", 0, Dashboard(store))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", store, name
    server.shutdown()


def _store_other_pipelines(store: ResultStore) -> None:
    """'aaa-ok': one window, every event arrived. 'mmm-error': one window not read."""
    from recon.engine.loss import compute
    from recon.model import WindowResult

    from .helpers import W, ledger

    computed = compute(
        W,
        [
            StageInput("webhook", ledger([("e1", "10:00:00")], "receipts")),
            StageInput("lake", ledger([("e1", "10:00:05")], "lake")),
        ],
    )
    ok = WindowResult(
        "aaa-ok", W, "ok", computed.events, computed.stages, computed.end_to_end,
        computed.missing, run_id=store.start_run("aaa-ok", W.start, W.end, "d"),
    )  # fmt: skip
    store.save_window(ok, {})
    error = WindowResult(
        "mmm-error", W, "error", error="kafka @ 127.0.0.1:1: unreachable",
        run_id=store.start_run("mmm-error", W.start, W.end, "d"),
    )  # fmt: skip
    store.save_window(error, {})


def _clock(t: datetime, last: datetime) -> str:
    """How the page writes a time: HH:MM on the latest window's day, else with the date."""
    return f"{t:%H:%M}" if t.date() == last.date() else f"{t:%Y-%m-%d %H:%M}"


def test_the_overview_states_the_incident_worst_first(browser, incident) -> None:
    """Worst first: the demo (breach), then the errored pipeline, then the ok one. The
    demo's headline says when the lake breached, for how long, how many events it lost
    and how badly, what is still in flight, and that Kafka has been ok all along."""
    url, store, name = incident
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    response = page.goto(f"{url}/?start={SINCE}")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert csp == "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'"
    assert page.locator("meta[http-equiv='refresh']").get_attribute("content") == "60"
    assert page.locator("h2").all_inner_texts() == [name, "mmm-error", "aaa-ok"]
    assert page.locator("ul.pipelines li .badge").all_inner_texts() == [
        "breach",
        "error",
        "ok",
    ]

    metrics = store.stage_metrics(name)
    lake = metrics[metrics["stage"] == "lake"].reset_index(drop=True)
    starts = [t.to_pydatetime() for t in lake["window_start"]]
    last = starts[-1]
    breached = lake.loc[list(INCIDENT_HOURS)]
    lost = int(breached["lost"].sum())
    assert lost == 8 * round(0.302 * EVENTS_PER_HOUR)
    want = [
        f"kafka: ok since {_clock(starts[0], last)} (12 windows)",
        f"lake: breached {_clock(starts[2], last)}\u2013{_clock(starts[10], last)} "
        f"(8 windows, {lost:,} events lost, worst {pct(float(breached['loss_rate'].max()))})",
        f"lake: in flight: {int(lake.loc[11, 'pending']):,} events pending "
        f"(window {_clock(starts[11], last)})",
    ]
    section = page.locator(f"section[data-pipeline='{name}']")
    assert section.locator("ul.headline li").all_inner_texts() == want
    assert section.locator("ul.headline li.breach").count() == 1
    assert page.locator("section[data-pipeline='mmm-error'] ul.headline li").inner_text() == (
        "1 window could not be read (no numbers), the last at 10:00"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-incident-overview.png"), full_page=True)


def test_the_grid_shows_exactly_the_breached_lake_cells(browser, incident) -> None:
    """Stages down, windows across: red in exactly the 8 lake cells of hours 2-9, each
    showing its stored loss rate and linking to its window; the in-flight cell amber; a
    tick on the time axis every 2 hours; a threshold line in each stage's panel (log)."""
    url, store, name = incident
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{url}/?start={SINCE}")
    section = page.locator(f"section[data-pipeline='{name}']")
    grid = section.locator("table.grid")
    assert grid.locator("tr[data-stage]").evaluate_all(
        "rows => rows.map(r => r.dataset.stage)"
    ) == [
        "kafka",
        "lake",
    ]
    windows = store.windows(name)
    ids = list(windows["window_id"])
    red = grid.locator("td.cell.breach")
    assert red.count() == 8
    assert grid.locator("tr[data-stage='lake'] td.cell.breach").count() == 8
    assert red.evaluate_all("cells => cells.map(c => c.dataset.window)") == [
        ids[h] for h in INCIDENT_HOURS
    ]
    lake = store.stage_metrics(name)
    lake = lake[lake["stage"] == "lake"].reset_index(drop=True)
    for h in INCIDENT_HOURS:
        assert red.nth(h - 2).inner_text() == pct(float(lake.loc[h, "loss_rate"]))
        assert red.nth(h - 2).locator("a").get_attribute("href") == f"/window/{ids[h]}"
    lake_cells = grid.locator("tr[data-stage='lake'] td.cell")
    assert lake_cells.nth(11).get_attribute("class") == "cell pending"
    assert grid.locator("tr[data-stage='kafka'] td.cell.ok").count() == 12
    assert grid.locator("th.time").count() == 12

    chart = section.locator("svg.chart")
    assert chart.locator("line.threshold").count() == 3  # kafka, lake, end to end
    assert chart.locator("text.tick").count() >= 5  # 12 hours: a tick every 2 hours
    assert chart.locator("circle.breach").count() == 16  # lake and end to end, 8 each
    page.locator("a.scale").click()
    assert "scale=linear" in page.url
    assert page.locator("a.scale").inner_text() == "log"

    page.goto(f"{url}/?start={SINCE}")
    red.first.locator("a").click()
    assert page.url.endswith(f"/window/{ids[2]}")


def test_a_breached_window_shows_its_flow_and_where_events_went(browser, incident) -> None:
    """Hour 2: the funnel's numbers are the stored counters (passed, and each leak at each
    hop); the counters table fits 1,400 px with p99, max and breach in view; missing
    events are grouped by partition and by minute, adding up to the stored ones."""
    url, store, name = incident
    window_id = store.windows(name)["window_id"].iloc[2]
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{url}/window/{window_id}")
    stored = store.window_metrics(window_id)
    for row in stored[stored["stage"] != "end_to_end"].itertuples():
        stage = page.locator(f".flow .stage[data-stage='{row.stage}']")
        assert stage.locator(".passed").inner_text() == f"{row.arrived:,}"
        if row.position == 0:
            continue
        hop = page.locator(f".flow .hop[data-stage='{row.stage}']")
        for leak in ("lost", "dead_lettered", "pending", "unverifiable", "unreadable"):
            shown = hop.locator(f".leak.{leak} b").inner_text()
            assert shown == f"{getattr(row, leak):,}", (row.stage, leak)
    lake = stored[stored["stage"] == "lake"].iloc[0]
    assert lake["lost"] == round(0.302 * EVENTS_PER_HOUR) and lake["breach"]

    table = page.locator("table.metrics").bounding_box()
    assert table is not None and table["x"] + table["width"] <= 1400
    for css in ("p99", "max", "breach"):
        cell = page.locator(f"table.metrics tr[data-stage='lake'] td.{css}").bounding_box()
        assert cell is not None and cell["x"] + cell["width"] <= 1400, css
    assert page.locator("table.metrics tr[data-stage='lake'] td.breach").inner_text() == "BREACH"

    missing = store.missing(window_id)
    by_place = missing["last_location"].map(place).value_counts()
    rows = page.locator("table.by-place tr").all()[1:]
    shown = {
        r.locator("td").first.inner_text(): int(r.locator("td.total").inner_text()) for r in rows
    }
    assert shown == {str(k): int(v) for k, v in by_place.items()}
    assert all(k.startswith(f"{name}-events[") and k.endswith("]") for k in shown)
    minutes = page.locator("table.by-minute td.total").all_inner_texts()
    assert sum(int(m) for m in minutes) == len(missing)
    assert len(minutes) == missing["origin_time"].dt.floor("min").nunique()
    page.screenshot(path=str(ARTIFACTS / "dashboard-incident-window.png"), full_page=True)


# -- without a browser ------------------------------------------------------------------


def _frames(stage: str, breaches: list[bool]) -> tuple[pd.DataFrame, pd.DataFrame]:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    rows, wins = [], []
    for i, breach in enumerate(breaches):
        t = start + timedelta(hours=i)
        wins.append(
            {"window_id": f"w{i}", "window_start": t, "status": "breach" if breach else "ok"}
        )
        rows.append(
            {
                "window_id": f"w{i}",
                "window_start": t,
                "window_end": t + timedelta(hours=1),
                "position": 1,
                "stage": stage,
                "upstream": 1000,
                "lost": 50 if breach else 0,
                "loss_rate": 0.05 if breach else 0.0,
                "pending": 0,
                "unverifiable": 0,
                "dead_lettered": 0,
                "breach": breach,
            }
        )
    return pd.DataFrame(rows), pd.DataFrame(wins)


def test_an_ongoing_breach_reads_breaching_since() -> None:
    rows, wins = _frames("lake", [True, False, True, True])
    h = headline("p", rows, wins)
    assert h.state == "breach"
    assert h.lines == [
        (
            "breach",
            "lake: breaching since 02:00 (2 windows, 100 events lost, worst 5.0%); "
            "1 more breached window before",
        )
    ]


def test_stored_names_are_escaped_in_headline_and_grid(tmp_path: Path) -> None:
    """A stage or pipeline name is stored text: shown literally, never markup."""
    from recon.web.views import grid_html, headline_html

    evil = "<script>x</script>'\""
    rows, wins = _frames(evil, [True])
    html = headline_html(headline(evil, rows, wins)) + grid_html(rows, wins.assign(events=1))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_bad_scale_is_a_400(tmp_path: Path) -> None:
    store = ResultStore(f"sqlite:///{tmp_path / 'r.sqlite'}")
    store.upgrade()
    app = Dashboard(store)
    assert app.respond("/", {"scale": ["cubic"]})[0] == "400 Bad Request"
    assert app.respond("/", {"scale": ["linear"]})[0] == "200 OK"
    assert app.respond("/", {"end": ["0001-01-01T00:00Z"]})[0] == "400 Bad Request"
