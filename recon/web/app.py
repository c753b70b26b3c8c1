"""A read-only WSGI app over the results store: overview, window, missing events, event.

Every stored string (event IDs included) is untrusted and HTML-escaped; no
script, style or chart library comes from anywhere but this module.
"""

from __future__ import annotations

import csv
import hmac
import http.cookies
import io
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any, cast

import pandas as pd

from recon.config import PipelineConfig
from recon.model import COUNTERS
from recon.store import ResultStore
from recon.web.charts import loss_chart
from recon.web.views import (
    Headline,
    causes_html,
    flow_html,
    grid_html,
    headline,
    headline_html,
    schema_ids_html,
    schema_uses,
    why_html,
)

PAGE_SIZE = 100
REFRESH_SECONDS = 60
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;font-size:14px}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .4rem;
text-align:right}td:first-child,th:first-child{text-align:left}
.ok{color:#2ca02c}.breach{color:#d62728;font-weight:bold}.incomplete{color:#b8860b}
.error{color:#7f7f7f;font-weight:bold}nav a{margin-right:1rem}
.badge{padding:.1rem .5rem;border-radius:.6rem;color:#fff;font-weight:bold}
.badge.breach{background:#d62728}.badge.error{background:#7f7f7f}
.badge.incomplete{background:#e0a800}.badge.ok{background:#2ca02c}.badge.empty{background:#aaa}
ul.headline{font-size:1.1rem;margin:.3rem 0 .8rem}ul.headline li{margin:.15rem 0}
ul.headline li.ok{font-weight:normal}
.scroll{overflow-x:auto;max-width:100%}.scroll.short{max-height:24rem;overflow-y:auto}
table.grid th,table.grid td{font-size:12px;padding:0;text-align:center;min-width:3.2rem}
table.grid th:first-child{text-align:left;padding:0 .4rem}table.grid tr.events td{color:#666}
table.grid td.cell a{display:block;padding:.35rem .2rem;color:#fff;text-decoration:none}
td.cell.breach{background:#d62728}td.cell.pending,td.cell.incomplete{background:#e0a800}
td.cell.ok{background:#2ca02c;font-weight:normal}td.cell.error{background:#7f7f7f}
td.cell.missing{background:#eee}td.cell.missing a{color:#666}
table.metrics th{white-space:normal;max-width:5.5rem;font-size:12px}
table.metrics td{white-space:nowrap}
.flow{max-width:60rem}.flow .stage{display:flex;align-items:center;gap:.6rem;margin:.1rem 0}
.flow .name{width:9rem;font-weight:bold}.flow .count{width:9rem}
.flow .bar{flex:1;display:flex;height:1.4rem;background:#f4f4f4}
.seg{display:block;height:100%}.seg.arrived{background:#2ca02c}.seg.lost{background:#d62728}
.seg.dead_lettered{background:#9467bd}.seg.pending{background:#e0a800}
.seg.unverifiable{background:#7f7f7f}
.flow .hop{margin:.1rem 0 .1rem 9.6rem;font-size:13px;color:#444}
.leak{margin-right:.8rem}.leak.zero{color:#aaa}.leak.lost b{color:#d62728}
.leak.dead_lettered b{color:#9467bd}.leak.pending b{color:#b8860b}
.hbar{display:inline-block;height:.7rem;background:#d62728}
"""
Response = tuple[str, str, bytes]  # status, content type, body
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'"
# GX's Data Docs pages link their own style sheets, images and fonts; still no script
# (their content is rendered into the HTML; only filters and toggles need script).
DOCS_CSP = "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self'; font-src 'self'"
# The files of a Data Docs site the dashboard serves, by suffix; nothing else.
DOCS_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".svg": "image/svg+xml",
    ".otf": "font/otf",
}
_RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _page(title: str, body: str, refresh: bool = False) -> Response:
    # A meta refresh, not script: the CSP allows no script, and the browser keeps
    # painting the old page until the new one has arrived (no blank flash).
    meta = f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>" if refresh else ""
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'>{meta}<title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><nav><a href='/'>recon</a></nav>"
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )
    return "200 OK", "text/html; charset=utf-8", html.encode()


def _status(value: str) -> str:
    return f"<span class='{escape(value)}'>{escape(value)}</span>"


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return escape(str(value))


_UNAUTHORIZED = "401 Unauthorized"
_COOKIE = "recon_token"


def _cookie(header: str) -> str:
    """The dashboard's token cookie from a Cookie header; "" if absent or malformed."""
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    try:
        jar.load(header)
    except http.cookies.CookieError:  # another site's malformed cookie: no token from it
        return ""
    morsel = jar.get(_COOKIE)
    return "" if morsel is None else urllib.parse.unquote(morsel.value)


class Dashboard:
    """The WSGI application."""

    def __init__(
        self, store: ResultStore, config: PipelineConfig | None = None, token: str | None = None
    ) -> None:
        self.store, self.config, self.token = store, config, token
        self.routes: list[tuple[str, Callable[..., Response]]] = [
            ("/window/", self.window),
            ("/missing/", self.missing),
            ("/event/", self.event),
            ("/docs/", self.docs),
        ]

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """WSGI entry point."""
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        # WSGI hands the path over already percent-decoded, its UTF-8 bytes as Latin-1
        # characters; `respond` takes it as sent (quoted), so an ID with % or é survives.
        raw = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace")
        cookie = _cookie(environ.get("HTTP_COOKIE", ""))
        status, kind, body = self.respond(
            urllib.parse.quote(raw), query, environ.get("HTTP_AUTHORIZATION", ""), cookie
        )
        headers = [
            ("Content-Type", kind),
            ("Content-Length", str(len(body))),
            ("Content-Security-Policy", DOCS_CSP if raw.startswith("/docs/") else CSP),
            ("X-Content-Type-Options", "nosniff"),
        ]
        if self.token is not None and status != _UNAUTHORIZED and query.get("token"):
            # The page's links carry no token: the browser sends it back as this cookie.
            value = urllib.parse.quote(self.token, safe="")
            headers.append(("Set-Cookie", f"{_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict"))
        start_response(status, headers)
        return [body]

    def respond(
        self, path: str, query: dict[str, list[str]], auth: str = "", cookie: str = ""
    ) -> Response:
        """Route a request (also used directly by tests).

        With a token, a request carries it as ?token=, as a bearer token, or in the
        cookie a page opened with ?token= set.
        """
        if self.token is not None:
            given = query.get("token", [""])[0] or auth.removeprefix("Bearer ").strip() or cookie
            # As bytes: compare_digest refuses str that is not ASCII (a 500 on ?token=é).
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return _UNAUTHORIZED, "text/plain", b"token required"
        try:
            if path == "/":
                return self.overview(query)
            for prefix, handler in self.routes:
                if path.startswith(prefix):
                    return handler(urllib.parse.unquote(path[len(prefix) :]), query)
        except BadRequest as exc:
            return "400 Bad Request", "text/plain; charset=utf-8", str(exc).encode()
        return "404 Not Found", "text/plain", b"not found"

    # -- pages --------------------------------------------------------------------------

    def overview(self, query: dict[str, list[str]]) -> Response:
        """Every pipeline in the store, worst first, over the chosen range (default 7 days).

        Per pipeline: the incident in words, the stage x window grid, the loss-rate chart.
        """
        end = _when(query.get("end"), datetime.now(UTC))
        try:
            start = _when(query.get("start"), end - timedelta(days=7))
        except OverflowError:  # ?end=0001-01-01: a week before it is no date (was a 500)
            raise BadRequest("end is too early to show the week before it") from None
        log = _scale(query)
        metrics = self.store.stage_metrics(start=start, end=end)
        wins = self.store.windows_between(start, end)
        known = self.store.pipelines()
        names = sorted(set(known["pipeline"]) | set(wins["pipeline"]))
        heads = sorted(
            (
                headline(
                    name,
                    metrics[metrics["pipeline"] == name],
                    wins[wins["pipeline"] == name],
                )
                for name in names
            ),
            key=lambda h: h.rank,
        )
        body = [self._range_form(start, end, log)]
        if not heads:
            body.append("<p>No reconciled windows in this store.</p>")
        body.append(_pipeline_list(heads))
        for h in heads:
            body.append(self._pipeline_section(h, metrics, wins, known, log))
        return _page("recon: pipelines", "".join(body), refresh=True)

    def _range_form(self, start: datetime, end: datetime, log: bool) -> str:
        other = "linear" if log else "log"
        keep = urllib.parse.urlencode(
            {"start": start.isoformat(), "end": end.isoformat(), "scale": other}
        )
        return (
            f"<form method='get'>from <input name='start' value='{escape(start.isoformat())}'>"
            f" to <input name='end' value='{escape(end.isoformat())}'> "
            f"<input type='hidden' name='scale' value='{'log' if log else 'linear'}'>"
            f"<button>show</button> loss-rate scale: {'log' if log else 'linear'} "
            f"<a class='scale' href='?{escape(keep)}'>{other}</a></form>"
        )

    def _pipeline_section(
        self,
        h: Headline,
        metrics: pd.DataFrame,
        wins: pd.DataFrame,
        known: pd.DataFrame,
        log: bool,
    ) -> str:
        rows = metrics[metrics["pipeline"] == h.pipeline]
        mine = wins[wins["pipeline"] == h.pipeline]
        parts = [
            f"<section class='pipeline' data-pipeline='{escape(h.pipeline)}'>"
            f"<h2 id='{escape(_anchor(h.pipeline))}'>{escape(h.pipeline)}</h2>"
            f"<p><span class='badge {escape(h.state)}'>{escape(h.state)}</span></p>",
            headline_html(h),
        ]
        if mine.empty:
            last = known.loc[known["pipeline"] == h.pipeline, "last_start"]
            if not last.empty:
                parts.append(
                    f"<p>latest stored window: {escape(str(last.iloc[0]))} (outside the range)</p>"
                )
            return "".join(parts) + "</section>"
        parts.append(grid_html(rows, mine))
        hop_rows = rows[rows["position"] > 0]
        # A row's fields hold whatever its columns do (pandas types them as any scalar).
        series = {
            str(stage): [
                (r.window_start.to_pydatetime(), float(r.loss_rate), bool(r.breach))
                for r in cast(Iterator[Any], g.itertuples())
            ]
            for stage, g in _in_order(hop_rows)
        }
        limits = {
            str(stage): (
                None
                if pd.isna(g["threshold_loss_rate"].iloc[-1])
                else float(g["threshold_loss_rate"].iloc[-1])
            )
            for stage, g in _in_order(hop_rows)
        }
        parts.append(loss_chart(series, limits, log=log))
        return "".join(parts) + "</section>"

    def window(self, window_id: str, query: dict[str, list[str]]) -> Response:
        """Per-stage counters, latency, expectations, and the window's run history."""
        w = self.store.window(window_id)
        if w is None:
            return "404 Not Found", "text/plain", b"no such window"
        m = self.store.window_metrics(window_id)
        uses = schema_uses(self.store.schema_ids(window_id))
        # Headers wrap at their words and latencies read as 10.4 min, not 621593.000:
        # the table fits a 1,400 px screen with p99, max and breach in view.
        head = "".join(
            f"<th>{c.replace('_', ' ')}</th>"
            for c in (*COUNTERS, "loss rate", "p50", "p95", "p99", "max", "breach")
        )
        rows = []
        r: Any  # a stage's row: its fields hold whatever its columns do
        for r in m.itertuples():
            cells = "".join(f"<td class='{c}'>{_fmt(getattr(r, c))}</td>" for c in COUNTERS)
            lat = "".join(
                f"<td class='{k}'>{_ms(getattr(r, f'latency_{k}_ms'))}</td>"
                for k in ("p50", "p95", "p99", "max")
            )
            link = (
                f"<a href='/missing/{escape(window_id)}?stage="
                f"{escape(urllib.parse.quote(str(r.stage)))}'>missing</a>"
                if r.position > 0 and r.stage != "end_to_end"
                else ""
            )
            rows.append(
                f"<tr data-stage='{escape(str(r.stage))}'><td>{escape(str(r.stage))} "
                f"{link}</td>{cells}<td>{r.loss_rate:.4%}</td>{lat}"
                f"<td class='breach'>{'BREACH' if r.breach else ''}</td></tr>"
            )
        exp = self.store.expectations(window_id)
        exp_rows = "".join(
            f"<tr><td>{escape(str(e.stage))}</td><td>{_expectation(e)}</td>"
            f"<td>{_fmt(e.observed)}</td><td>"
            f"{'pass' if e.success else 'FAIL'}</td></tr>"
            for e in exp.itertuples()
        )
        docs = self.store.data_docs(str(w["run_id"]))
        docs_link = (
            f"<p><a class='data-docs' href='/docs/{escape(str(w['run_id']))}/'>"
            "Great Expectations Data Docs of this run</a></p>"
            if docs is not None
            else ""
        )
        history = self.store.history(window_id)
        hist_rows = "".join(
            f"<tr><td><a href='/window/{escape(str(h.window_id))}'>"
            f"{escape(str(h.computed_at))}</a></td><td>{_status(str(h.status))}"
            f"</td><td>{_fmt(h.events)}</td><td>{'latest' if h.is_latest else ''}"
            f"</td></tr>"
            for h in history.itertuples()
        )
        body = (
            f"<p>{escape(str(w['pipeline']))} [{escape(str(w['window_start']))}, "
            f"{escape(str(w['window_end']))}) {_status(str(w['status']))} events="
            f"{_fmt(w['events'])}</p>"
            + (f"<p class='error'>{escape(str(w['error']))}</p>" if w["error"] else "")
            + causes_html(uses)
            + flow_html(m)
            + f"<h2>Counters</h2><table class='metrics'><tr><th>stage</th>{head}</tr>"
            f"{''.join(rows)}</table>"
            + schema_ids_html(uses)
            + _notes_html(self.store.notes(window_id))
            + why_html(self.store.missing(window_id))
            + _dead_letters_html(self.store.dead_letter_errors(window_id))
            + f"<h2>Expectations</h2><table class='expectations'><tr><th>stage</th>"
            f"<th>expectation</th><th>observed</th><th>result</th></tr>{exp_rows}</table>"
            + docs_link
            + f"<h2>Run history (restatements)</h2><table><tr><th>computed</th><th>status"
            f"</th><th>events</th><th></th></tr>{hist_rows}</table>"
        )
        return _page("Window", body, refresh=True)

    def missing(self, rest: str, query: dict[str, list[str]]) -> Response:
        """Paged missing events of a window and stage, or all of them as CSV."""
        window_id, _, suffix = rest.partition(".")
        stage = query.get("stage", [None])[0]
        frame = self.store.missing(window_id, stage)
        if suffix == "csv":
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(
                [
                    "event_id",
                    "stage",
                    "outcome",
                    "origin_time",
                    "last_stage",
                    "last_seen_at",
                    "last_location",
                ]
            )
            for r in frame.itertuples():
                writer.writerow(
                    _as_text(v)
                    for v in (
                        r.event_id,
                        r.stage,
                        r.outcome,
                        r.origin_time,
                        r.last_stage,
                        r.last_seen_at,
                        r.last_location,
                    )
                )
            return "200 OK", "text/csv; charset=utf-8", out.getvalue().encode()
        page = _page_number(query)
        shown = frame.iloc[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        qs = f"stage={urllib.parse.quote(stage)}&" if stage else ""
        rows = "".join(
            f"<tr><td><a href='/event/{escape(urllib.parse.quote(str(r.event_id), safe=''))}'>"
            f"{escape(str(r.event_id))}</a></td><td>{escape(str(r.stage))}</td><td>"
            f"{escape(str(r.outcome))}</td><td>{escape(str(r.origin_time))}</td><td>"
            f"{escape(str(r.last_stage))}</td><td>{escape(str(r.last_location))}</td></tr>"
            for r in shown.itertuples()
        )
        pages = max((len(frame) + PAGE_SIZE - 1) // PAGE_SIZE, 1)
        nav = (
            f"<p>page {page} of {pages} ({len(frame)} events) "
            + (f"<a href='?{qs}page={page - 1}'>previous</a> " if page > 1 else "")
            + (f"<a href='?{qs}page={page + 1}'>next</a> " if page < pages else "")
            + f"<a class='csv' href='/missing/{escape(window_id)}.csv?{qs}'>CSV</a></p>"
        )
        body = (
            nav + "<table class='missing'><tr><th>event</th><th>stage</th><th>outcome</th>"
            f"<th>origin time</th><th>last stage</th><th>last seen at</th></tr>{rows}</table>"
        )
        return _page("Missing events", body)

    def event(self, event_id: str, query: dict[str, list[str]]) -> Response:
        """One event: stored missing records and, with a config, its live trace."""
        stored = self.store.missing_records(event_id)
        rows = "".join(
            f"<tr><td>{escape(str(r.pipeline))}</td><td>{escape(str(r.window_start))}"
            f"</td><td>{escape(str(r.stage))}</td><td>{escape(str(r.outcome))}</td>"
            f"<td>{escape(str(r.last_location))}</td></tr>"
            for r in stored.itertuples()
        )
        body = [
            f"<p class='event-id'>{escape(event_id)}</p><table><tr><th>pipeline</th>"
            f"<th>window</th><th>stage</th><th>outcome</th><th>last seen</th></tr>{rows}"
            "</table>"
        ]
        if self.config is not None:
            from recon.engine.explain import explain, stored_outcomes, window_of

            window = (
                window_of(self.config, event_id, None, self.store) if not stored.empty else None
            )
            if window is not None:
                trace = explain(self.config, event_id, window)
                said = stored_outcomes(self.store, self.config.pipeline, event_id, window)
                conflict = trace.disagreement(said) if said is not None else None
                read_at = trace.read_at.isoformat() if trace.read_at else "?"
                body.append(
                    f"<h2>Trace</h2><p class='verdict'>{escape(trace.summary)}</p>"
                    f"<p class='read-at'>live sources read at {escape(read_at)}</p>"
                    + (f"<p class='conflict'>warning: {escape(conflict)}</p>" if conflict else "")
                    + "<table><tr><th>time</th><th>stage</th><th>where</th>"
                    "<th>schema id</th><th>error</th></tr>"
                    + "".join(
                        f"<tr><td>{escape(s.time.isoformat())}</td><td>"
                        f"{escape(s.stage + (' (dead letter)' if s.sink else ''))}</td>"
                        f"<td>{escape(s.location)}</td><td>{_fmt(s.schema_id)}</td>"
                        f"<td>{escape(s.error or '')}</td></tr>"
                        for s in trace.sightings
                    )
                    + "</table>"
                )
        return _page("Event", "".join(body))

    def docs(self, rest: str, query: dict[str, list[str]]) -> Response:
        """A run's Great Expectations Data Docs: its pages listed, or one file of the site.

        Only files inside the directory the run recorded, of the types GX writes.
        """
        run_id, _, inner = rest.partition("/")
        index = self.store.data_docs(run_id) if _RUN_ID.match(run_id) else None
        if index is None:
            return "404 Not Found", "text/plain", b"no Data Docs for this run"
        root = index.parent.resolve()
        if not inner:
            return _docs_listing(run_id, root)
        target = (root / inner).resolve()
        kind = DOCS_TYPES.get(target.suffix.lower())
        if kind is None or not target.is_relative_to(root) or not target.is_file():
            return "404 Not Found", "text/plain", b"not found"
        return "200 OK", kind, target.read_bytes()


def _docs_listing(run_id: str, root: Path) -> Response:
    """The run's validation pages (GX's own index lists them only with script)."""
    pages = sorted(p.relative_to(root).as_posix() for p in (root / "validations").rglob("*.html"))
    items = "".join(
        f"<li><a href='/docs/{escape(run_id)}/{escape(urllib.parse.quote(p))}'>"
        f"{escape(p.removeprefix('validations/'))}</a></li>"
        for p in pages
    )
    body = (
        f"<p>run {escape(run_id)}: {len(pages)} validation results, built offline in "
        f"{escape(str(root))}</p><ul class='validations'>{items}</ul>"
    )
    return _page("Great Expectations Data Docs", body)


def _expectation(e: Any) -> str:
    """A stored expectation as people read it: a user's by its name, recon's by its limit."""
    if e.name is not None and not (isinstance(e.name, float) and pd.isna(e.name)):
        return escape(str(e.name))
    sign = "&gt;=" if e.column_name == "events" else "&lt;="
    return f"{escape(str(e.column_name))} {sign} {e.threshold:g}"


def _dead_letters_html(errors: pd.DataFrame) -> str:
    """The window's dead-lettered events per stage and error (every text escaped)."""
    if errors.empty:
        return ""
    rows = "".join(
        f"<tr><td>{escape(str(r.stage))}</td><td class='error-text'>{escape(str(r.error))}</td>"
        f"<td>{_fmt(r.events)}</td></tr>"
        for r in errors.itertuples()
    )
    return (
        "<h2>Dead letters by error</h2><table class='dead-letters'><tr><th>stage</th>"
        f"<th>error</th><th>events</th></tr>{rows}</table>"
    )


def _notes_html(notes: list[str]) -> str:
    """The window's notes: why its numbers are what they are (every one escaped)."""
    if not notes:
        return ""
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f"<h2>Notes</h2><ul class='notes'>{items}</ul>"


def _pipeline_list(heads: list[Headline]) -> str:
    """The pipelines, worst first, each linked to its section."""
    if not heads:
        return ""
    items = "".join(
        f"<li><a href='#{escape(_anchor(h.pipeline))}'>{escape(h.pipeline)}</a> "
        f"<span class='badge {escape(h.state)}'>{escape(h.state)}</span></li>"
        for h in heads
    )
    return f"<ul class='pipelines'>{items}</ul>"


def _anchor(pipeline: str) -> str:
    return "p-" + urllib.parse.quote(pipeline, safe="")


def _in_order(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(stage, rows) in pipeline order: the chart's panels follow the data's path."""
    order = list(dict.fromkeys(rows.sort_values("position")["stage"]))
    return [(str(s), rows[rows["stage"] == s]) for s in order]


def _scale(query: dict[str, list[str]]) -> bool:
    """?scale=log (default) or linear: True for log."""
    value = query.get("scale", ["log"])[0] or "log"
    if value not in ("log", "linear"):
        raise BadRequest(f"scale must be log or linear, got {value[:40]!r}")
    return value == "log"


def _ms(value: Any) -> str:
    """A latency people read at a glance: 850 ms, 12.3 s, 10.4 min, 2.1 h."""
    if value is None or pd.isna(value):
        return "-"
    ms = float(value)
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


class BadRequest(ValueError):
    """A request parameter recon cannot use: answered 400 with the reason."""


def _when(values: list[str] | None, default: datetime) -> datetime:
    from recon.timeutil import parse_instant

    if not values or not values[0]:
        return default
    try:
        return parse_instant(values[0])
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _page_number(query: dict[str, list[str]]) -> int:
    text = query.get("page", ["1"])[0] or "1"
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise BadRequest(f"page must be a positive integer, got {text[:40]!r}")
    return int(text)


# A cell starting with one of these is a formula to a spreadsheet (=HYPERLINK(...)).
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _as_text(value: Any) -> str:
    """A CSV cell a spreadsheet shows as text: a leading formula character is quoted."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA) else text


def serve(app: Dashboard, host: str, port: int) -> None:
    """Serve the dashboard (threaded wsgiref: enough for a team's read-only use)."""
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return  # access logs would repeat event IDs into the terminal

    with make_server(host, port, app, server_class=Server, handler_class=QuietHandler) as httpd:
        print(f"recon dashboard on http://{host}:{httpd.server_port}/", flush=True)
        httpd.serve_forever()
