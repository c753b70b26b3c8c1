"""`recon dashboard` in a real browser (Playwright driving Debian's chromium)."""

from __future__ import annotations

import csv
import io
import os
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from wsgiref.simple_server import make_server

import pytest
import yaml

from recon.cli import main
from recon.config import load_config
from recon.model import StageInput
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan
from recon.store import ResultStore
from recon.web.app import Dashboard

from .conftest import missing_in_ci_fails

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
START = datetime(2026, 11, 26, tzinfo=UTC)
EVIL = "<script>window.pwned=1</script>\"'&"


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    if not os.path.exists(CHROMIUM):
        missing_in_ci_fails("Debian's chromium is not installed (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def site(pg_url: str, bootstrap: str, unique: str, tmp_path: Path) -> Iterator[tuple]:
    """3 hours x 500 events whose IDs all start with a <script> payload and quotes; hour 1
    loses 10 % at the lake (over its 1 % threshold), 2 dead letters an hour."""
    p = plan(
        Scenario(
            start=START,
            hours=3,
            events_per_hour=500,
            seed=31,
            id_prefix=EVIL,
            lake_loss=lambda h: 0.1 if h == 1 else 0.0,
            dead_letters_per_hour=2,
        )
    )
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(p, targets)
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(targets, thresholds={"loss_rate": 0.01})))
    assert (
        main(
            [
                "run",
                "--config",
                str(config),
                "--start",
                START.isoformat(),
                "--end",
                (START + timedelta(hours=3)).isoformat(),
            ]
        )
        == 1
    )
    cfg = load_config(config)
    store = ResultStore(f"sqlite:///{tmp_path / 'recon-results.sqlite'}")
    server = make_server("127.0.0.1", 0, Dashboard(store, cfg))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", store, unique
    server.shutdown()


def test_pages_show_the_stored_numbers(browser, site) -> None:
    """Overview: one chart, breach markers at hour 1 (lake and end to end). Window page:
    every counter of every stage equals the stored one. CSV: exactly the missing IDs.
    Event page: the <script> ID is shown literally and runs nothing."""
    url, store, pipeline = site
    page = browser.new_page()
    page.goto(f"{url}/?start=2026-11-26T00:00Z&end=2026-11-26T03:00Z")
    assert page.inner_text("h2") == pipeline
    assert page.locator("svg.chart").count() == 1
    assert page.locator("circle.breach").count() == 2
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

    windows = store.windows(pipeline)
    breached = windows[windows["status"] == "breach"].iloc[0]
    page.goto(f"{url}/window/{breached['window_id']}")
    stored = store.window_metrics(breached["window_id"])
    for row in stored.itertuples():
        cells = page.locator(f"tr[data-stage='{row.stage}'] td")
        for name in (
            "upstream",
            "arrived",
            "lost",
            "dead_lettered",
            "pending",
            "late",
            "duplicates",
            "orphans",
        ):
            shown = page.locator(f"tr[data-stage='{row.stage}'] td.{name}").inner_text()
            assert shown == str(getattr(row, name)), (row.stage, name)
        assert cells.count() > 10
    page.screenshot(path=str(ARTIFACTS / "dashboard-window.png"), full_page=True)

    missing = store.missing(breached["window_id"], "lake")
    assert len(missing) == 50 + 2  # 10 % of 500 lost, 2 dead-lettered
    response = page.request.get(f"{url}/missing/{breached['window_id']}.csv?stage=lake")
    rows = list(csv.DictReader(io.StringIO(response.text())))
    assert sorted(r["event_id"] for r in rows) == sorted(missing["event_id"])

    page.goto(f"{url}/missing/{breached['window_id']}?stage=lake")
    assert page.locator("table.missing tr").count() == 1 + 52
    evil = str(missing["event_id"].iloc[0])
    assert evil.startswith(EVIL)
    page.goto(f"{url}/event/{urllib.parse.quote(evil, safe='')}")
    assert page.inner_text("p.event-id") == evil
    outcome = str(missing["outcome"].iloc[0]).replace("_", "-")
    assert page.inner_text("p.verdict") == f"{evil}: {outcome} at lake"
    assert page.evaluate("typeof window.pwned") == "undefined"
    page.screenshot(path=str(ARTIFACTS / "dashboard-event.png"), full_page=True)


def test_a_token_given_once_opens_the_pages_links(browser, site) -> None:
    """With a token, the overview opened with ?token= sets it as an HttpOnly, SameSite=Strict
    cookie, so its links (which carry no token) open: the breached window's link answers
    200 with the window's page. A browser without the cookie gets 401 on the same link, and
    one whose cookie holds another token too."""
    _, store, _ = site
    server = make_server("127.0.0.1", 0, Dashboard(store, token="s3 cret/é"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        page = browser.new_page()
        token = urllib.parse.quote("s3 cret/é")
        first = page.goto(f"{base}/?start=2026-11-26T00:00Z&end=2026-11-26T03:00Z&token={token}")
        assert first is not None and first.status == 200
        ((cookie,),) = [page.context.cookies()]
        assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
            "recon_token",
            True,
            "Strict",
        )
        link = page.locator("a[href^='/window/']").first
        href = link.get_attribute("href")
        assert href is not None and "token" not in href
        with page.expect_navigation() as opened:
            link.click()
        assert opened.value is not None and opened.value.status == 200
        assert page.locator("table").count() > 0
        stranger = browser.new_context().new_page()
        refused = stranger.goto(base + href)
        assert refused is not None and refused.status == 401
        forged = browser.new_context()
        forged.add_cookies([{"name": "recon_token", "value": "guess", "url": base}])
        refused = forged.new_page().goto(base + href)
        assert refused is not None and refused.status == 401
    finally:
        server.shutdown()


def test_token_is_required_when_configured(tmp_path: Path) -> None:
    store = ResultStore(f"sqlite:///{tmp_path / 'r.sqlite'}")
    store.upgrade()
    app = Dashboard(store, token="s3cret")
    assert app.respond("/", {})[0] == "401 Unauthorized"
    assert app.respond("/", {"token": ["s3cret"]})[0] == "200 OK"
    assert app.respond("/", {}, auth="Bearer s3cret")[0] == "200 OK"
    assert app.respond("/", {}, cookie="s3cret")[0] == "200 OK"


@pytest.mark.parametrize(
    ("cookie", "status"),
    [
        ("recon_token=s3cret", "200 OK"),
        ("other=1; recon_token=s3cret", "200 OK"),
        ("recon_token=wrong", "401 Unauthorized"),
        ('recon_token="unterminated; x', "401 Unauthorized"),  # malformed: no token from it
        ("", "401 Unauthorized"),
    ],
)
def test_the_token_cookie_over_wsgi(tmp_path: Path, cookie: str, status: str) -> None:
    """The Cookie header as a browser sends it: only the dashboard's own cookie with the
    token opens a page; a malformed header is no token (and no 500)."""
    store = ResultStore(f"sqlite:///{tmp_path / 'r.sqlite'}")
    store.upgrade()
    app = Dashboard(store, token="s3cret")
    got: list[str] = []
    app({"PATH_INFO": "/", "HTTP_COOKIE": cookie}, lambda s, headers: got.append(s))
    assert got == [status]


def _missing_stored(tmp_path: Path, ids: list[str]) -> tuple[ResultStore, str]:
    """A store holding one window of W whose origin saw `ids` and the lake none."""
    from recon.engine.loss import compute
    from recon.model import WindowResult

    from .helpers import W, ledger

    computed = compute(
        W,
        [
            StageInput("webhook", ledger([(e, "10:00:00") for e in ids], "receipts")),
            StageInput("lake", ledger([], "lake")),
        ],
    )
    store = ResultStore(f"sqlite:///{tmp_path / 'r.sqlite'}")
    store.upgrade()
    result = WindowResult(
        "p", W, "breach", computed.events, computed.stages, computed.end_to_end,
        computed.missing, run_id=store.start_run("p", W.start, W.end, "d"),
    )  # fmt: skip
    return store, store.save_window(result, {})


def test_bad_input_gets_400_or_401_never_a_traceback(tmp_path: Path) -> None:
    """?page=abc and ?start=garbage answered 500 (a ValueError); ?token=é too (hmac's
    TypeError on non-ASCII text). Now 400 with the reason, and 401."""
    store = ResultStore(f"sqlite:///{tmp_path / 'r.sqlite'}")
    store.upgrade()
    app = Dashboard(store)
    assert app.respond("/missing/w1", {"page": ["abc"]})[:2] == (
        "400 Bad Request",
        "text/plain; charset=utf-8",
    )
    assert b"page must be a positive integer" in app.respond("/missing/w1", {"page": ["0"]})[2]
    assert app.respond("/", {"start": ["garbage"]})[0] == "400 Bad Request"
    guarded = Dashboard(store, token="s3cret")
    assert guarded.respond("/", {"token": ["é"]})[0] == "401 Unauthorized"
    assert guarded.respond("/", {}, auth="Bearer ünïcode")[0] == "401 Unauthorized"


def test_the_missing_events_csv_cannot_carry_a_formula(tmp_path: Path) -> None:
    """Missing IDs a sender chose: '=HYPERLINK(...)', '+1', '-2', '@SUM(A1)', a tab and a CR
    first. In the CSV each starts with a quote, so a spreadsheet shows it as text; a plain
    ID is as it was."""
    evil = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "\ry", "plain"]
    store, window_id = _missing_stored(tmp_path, evil)
    status, kind, body = Dashboard(store).respond(f"/missing/{window_id}.csv", {})
    assert (status, kind) == ("200 OK", "text/csv; charset=utf-8")
    rows = list(csv.reader(io.StringIO(body.decode())))[1:]
    assert sorted(r[0] for r in rows) == sorted(["'" + e for e in evil if e != "plain"] + ["plain"])


def test_an_event_id_with_percent_or_accents_is_found_over_http(tmp_path: Path) -> None:
    """IDs 'é-1' and '50%off' stored missing: their event pages, requested as a browser
    sends them (percent-encoded UTF-8), show them. The path used to be decoded twice."""
    evil = ["é-1", "50%off"]
    store, _ = _missing_stored(tmp_path, evil)
    app = Dashboard(store)
    seen: list[str] = []

    def start_response(status: str, headers: object) -> None:
        seen.append(status)

    for event in evil:
        sent = "/event/" + urllib.parse.quote(event, safe="")
        # What wsgiref puts in PATH_INFO: the decoded bytes, as Latin-1 characters.
        path_info = urllib.parse.unquote_to_bytes(sent).decode("latin-1")
        seen.clear()
        body = b"".join(app({"PATH_INFO": path_info}, start_response))
        assert seen == ["200 OK"]
        assert f"<p class='event-id'>{event}</p>".encode() in body
