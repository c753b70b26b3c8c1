"""What on-call reads first, as HTML from stored frames (pure functions).

The incident in words, the stage x window grid, a window's flow, and where its
missing events came from.

Every stored string goes through escape(); numbers are formatted here, never stored text.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

import pandas as pd

from recon.engine.schemas import attribution
from recon.model import END_TO_END, SchemaIdUse, Status
from recon.web.charts import pct

# Worst first: the order pipelines are listed in, and the order cell states win in.
RANK: dict[str, int] = {Status.BREACH: 0, Status.ERROR: 1, Status.INCOMPLETE: 2, Status.OK: 3}
# What leaves a hop's upstream without arriving (docs/semantics.md), in charge order.
LEAKS = ("lost", "dead_lettered", "pending", "unverifiable")


def hops(rows: pd.DataFrame) -> list[str]:
    """The stages after the origin, in pipeline order (end to end is their sum: left out)."""
    ordered = rows.sort_values("position")
    return [
        str(s)
        for s in dict.fromkeys(ordered.loc[ordered["position"] > 0, "stage"])
        if s != END_TO_END
    ]


def clock(t: datetime, today: str) -> str:
    """'02:00' on the latest window's day, '2026-12-03 02:00' on another (7 days shown)."""
    return f"{t:%H:%M}" if f"{t:%Y-%m-%d}" == today else f"{t:%Y-%m-%d %H:%M}"


# -- headline --------------------------------------------------------------------------


@dataclass
class Headline:
    """One pipeline's state over the range and the sentences that say it."""

    pipeline: str
    state: str  # breach | error | incomplete | ok | empty
    lost: int = 0
    lines: list[tuple[str, str]] = field(default_factory=list)  # (css class, text)

    @property
    def rank(self) -> tuple[int, int, str]:
        """Sort key: worst state first, then most events lost, then by name."""
        return (RANK.get(self.state, 4), -self.lost, self.pipeline)


def headline(pipeline: str, rows: pd.DataFrame, wins: pd.DataFrame) -> Headline:
    """The incident in words from the latest results.

    Per hop: its last breach episode (ongoing or over), what is in flight now, or how
    long it has been ok; per pipeline: windows that could not be read.
    """
    if wins.empty:
        return Headline(pipeline, "empty", lines=[("empty", "no windows in this range")])
    wins = wins.sort_values("window_start")
    today = f"{wins['window_start'].iloc[-1]:%Y-%m-%d}"
    lines: list[tuple[str, str]] = []
    for stage in hops(rows):
        g = rows[rows["stage"] == stage].sort_values("window_start")
        lines += _stage_lines(stage, g, today)
    errors = wins[wins["status"] == Status.ERROR]
    if not errors.empty:
        last = errors["window_start"].iloc[-1]
        lines.append(
            (
                "error",
                f"{len(errors)} window{'s' if len(errors) != 1 else ''} could not be read "
                f"(no numbers), the last at {clock(last, today)}",
            )
        )
    hop_rows = rows[rows["stage"].isin(hops(rows))]
    lost = int(hop_rows.loc[hop_rows["breach"].astype(bool), "lost"].sum())
    latest = str(wins["status"].iloc[-1])
    if bool(hop_rows["breach"].astype(bool).any()) or (wins["status"] == Status.BREACH).any():
        state = "breach"
    elif not errors.empty:
        state = "error"
    elif latest == "incomplete" or any(c == "incomplete" for c, _ in lines):
        state = "incomplete"
    else:
        state = "ok"
    return Headline(pipeline, state, lost, lines)


def _stage_lines(stage: str, g: pd.DataFrame, today: str) -> list[tuple[str, str]]:
    """A hop's sentences: last breach episode, in flight now, else ok since when."""
    lines = []
    breach = g["breach"].astype(bool).tolist()
    episode = _last_run(breach)
    if episode is not None:
        first, last = episode
        part = g.iloc[first : last + 1]
        n, lost = len(part), int(part["lost"].sum())
        since = clock(part["window_start"].iloc[0], today)
        facts = (
            f"{n} window{'s' if n != 1 else ''}, {lost:,} events lost, "
            f"worst {pct(float(part['loss_rate'].max()))}"
        )
        if last == len(g) - 1:
            text = f"{stage}: breaching since {since} ({facts})"
        else:
            until = clock(part["window_end"].iloc[-1], today)
            text = f"{stage}: breached {since}\u2013{until} ({facts})"
        earlier = sum(breach[:first])
        if earlier:
            text += f"; {earlier} more breached window{'s' if earlier != 1 else ''} before"
        lines.append(("breach", text))
    now = g.iloc[-1]
    if int(now["pending"]) or int(now["unverifiable"]):
        what = [f"{int(now['pending']):,} events pending"] if int(now["pending"]) else []
        if int(now["unverifiable"]):
            what.append(f"{int(now['unverifiable']):,} unverifiable")
        lines.append(
            (
                "incomplete",
                f"{stage}: in flight: {', '.join(what)} "
                f"(window {clock(now['window_start'], today)})",
            )
        )
    elif episode is None or episode[1] < len(g) - 1:
        start = (episode[1] + 1) if episode is not None else 0
        n = len(g) - start
        lines.append(
            (
                "ok",
                f"{stage}: ok since {clock(g['window_start'].iloc[start], today)} "
                f"({n} window{'s' if n != 1 else ''})",
            )
        )
    return lines


def _last_run(flags: list[bool]) -> tuple[int, int] | None:
    """(first, last) index of the last run of consecutive True, or None."""
    last = max((i for i, f in enumerate(flags) if f), default=None)
    if last is None:
        return None
    first = last
    while first > 0 and flags[first - 1]:
        first -= 1
    return first, last


def headline_html(h: Headline) -> str:
    """The headline's sentences, each coloured by what it says."""
    items = "".join(f"<li class='{cls}'>{escape(text)}</li>" for cls, text in h.lines)
    return f"<ul class='headline' data-state='{escape(h.state)}'>{items}</ul>"


# -- stage x window grid ---------------------------------------------------------------


def cell_state(row: pd.Series | None, status: str, in_flight: bool = False) -> str:
    """A hop's state in one window, worst first.

    Its own breach, events in flight, the window's incompleteness (too young to
    settle), ok; no row at all: the window errored (no numbers are stored then).
    """
    if row is None:
        return "error" if status == Status.ERROR else "missing"
    if bool(row["breach"]):
        return "breach"
    if int(row["pending"]) or int(row["unverifiable"]):
        return "pending"
    # Incomplete because of another hop's events in flight says nothing about this hop;
    # incomplete with none in flight (too young to settle) holds for every hop.
    if status == "incomplete" and not in_flight:
        return "incomplete"
    return "ok"


def grid_html(rows: pd.DataFrame, wins: pd.DataFrame) -> str:
    """Hops down, windows across: each cell its state's colour, its loss rate, a link."""
    wins = wins.sort_values("window_start")
    if wins.empty:
        return ""
    today = f"{wins['window_start'].iloc[-1]:%Y-%m-%d}"
    by_key = {(str(r["window_id"]), str(r["stage"])): r for _, r in rows.iterrows()}
    waiting = rows.loc[(rows["pending"] > 0) | (rows["unverifiable"] > 0), "window_id"]
    in_flight = set(waiting.astype(str))
    head, events, last_day = ["<th>window</th>"], ["<th>events</th>"], None
    w: Any  # a window's row: its fields hold whatever its columns do
    for w in wins.itertuples():
        day = f"{w.window_start:%Y-%m-%d}"
        label = f"{w.window_start:%H:%M}" if day == last_day else f"{day}<br>{w.window_start:%H:%M}"
        last_day = day
        head.append(f"<th class='time'>{label}</th>")
        events.append(f"<td>{'' if pd.isna(w.events) else f'{int(w.events):,}'}</td>")
    body = []
    # A pipeline whose every window errored has no stage rows: one row still shows them.
    for stage in hops(rows) or ["(no numbers)"]:
        cells = [f"<th>{escape(stage)}</th>"]
        for w in wins.itertuples():
            row = by_key.get((str(w.window_id), stage))
            cells.append(_cell(stage, row, w, today, str(w.window_id) in in_flight))
        body.append(f"<tr data-stage='{escape(stage)}'>{''.join(cells)}</tr>")
    return (
        "<div class='scroll'><table class='grid'>"
        f"<tr>{''.join(head)}</tr><tr class='events'>{''.join(events)}</tr>{''.join(body)}"
        "</table></div>"
    )


def _cell(stage: str, row: pd.Series | None, w: Any, today: str, in_flight: bool) -> str:
    state = cell_state(row, str(w.status), in_flight)
    when = clock(w.window_start, today)
    if row is None:
        text, title = ("error" if state == "error" else "-"), f"{stage} {when}: {state}"
    else:
        text = pct(float(row["loss_rate"]))
        title = (
            f"{stage} {when}: {state}, {int(row['lost']):,} lost of {int(row['upstream']):,}"
            f" ({text}), {int(row['pending']):,} pending, "
            f"{int(row['dead_lettered']):,} dead-lettered"
        )
    href = f"/window/{urllib.parse.quote(str(w.window_id), safe='')}"
    return (
        f"<td class='cell {state}' data-window='{escape(str(w.window_id))}'>"
        f"<a href='{escape(href)}' title='{escape(title)}'>{escape(text)}</a></td>"
    )


# -- one window's flow -----------------------------------------------------------------


def flow_html(metrics: pd.DataFrame) -> str:
    """The stages as a funnel: how many passed each, and what leaked at each hop.

    Each bar is the hop's upstream (scaled to the cohort), split into arrived and the
    leaks that make up the rest, so the widths add up the way the counters do.
    """
    stages = metrics[metrics["stage"] != END_TO_END].sort_values("position")
    if stages.empty:
        return ""
    cohort = max(int(stages["upstream"].iloc[0]), 1)
    parts = ["<h2>Flow</h2><div class='flow'>"]
    r: Any  # a stage's row: its fields hold whatever its columns do
    for r in stages.itertuples():
        stage = escape(str(r.stage))
        if r.position > 0:
            parts.append(_leaks(stage, r))
        bar = _bar([("arrived", int(r.arrived))] + [(k, int(getattr(r, k))) for k in LEAKS], cohort)
        verb = "received" if r.position == 0 else "passed"
        parts.append(
            f"<div class='stage' data-stage='{stage}'><span class='name'>{stage}</span>"
            f"{bar}<span class='count'><b class='passed'>{int(r.arrived):,}</b> {verb}</span>"
            "</div>"
        )
    return "".join(parts) + "</div>"


def _leaks(stage: str, r: Any) -> str:
    """The hop into `stage`: each leak with its count (zeros muted, never hidden)."""
    items = []
    for name in (*LEAKS, "unreadable"):
        value = int(getattr(r, name))
        items.append(
            f"<span class='leak {name}{'' if value else ' zero'}'>"
            f"<b>{value:,}</b> {name.replace('_', '-')}</span>"
        )
    return f"<div class='hop' data-stage='{stage}'>\u2193 {' '.join(items)}</div>"


def _bar(segments: list[tuple[str, int]], cohort: int) -> str:
    spans = "".join(
        f"<span class='seg {name}' style='width:{100 * value / cohort:.2f}%' "
        f"title='{value:,} {name.replace('_', '-')}'></span>"
        for name, value in segments
        if value
    )
    return f"<span class='bar'>{spans}</span>"


# -- why: missing events by minute and by partition ------------------------------------

_PLACE = re.compile(r"^(?P<where>.*?)(?:@\d+|:\d+)$")


def place(location: object) -> str:
    """The partition (`topic[3]` of `topic[3]@1234`) or file (`a.log` of `a.log:17`)."""
    if location is None or (isinstance(location, float) and pd.isna(location)):
        return "(never seen)"
    text = str(location)
    match = _PLACE.match(text)
    return match.group("where") if match else text


def why_html(missing: pd.DataFrame) -> str:
    """Missing events by the partition last seen on and by minute of origin.

    Says where and since when the events vanished.
    """
    if missing.empty:
        return ""
    frame = missing.assign(
        minute=missing["origin_time"].dt.floor("min"),
        place=missing["last_location"].map(place),
    )
    return (
        "<h2>Missing events by partition last seen</h2>"
        + _by(frame, "place", "partition", lambda v: escape(str(v)), "by-place")
        + "<h2>Missing events by minute of origin</h2>"
        + _by(frame, "minute", "minute (UTC)", lambda v: f"{v:%H:%M}", "by-minute")
    )


def _by(frame: pd.DataFrame, key: str, label: str, show: Callable[[Any], str], css: str) -> str:
    """Counts per (stage, outcome) for each value of `key`, with first/last origin time."""
    kinds = sorted({f"{s} {o}" for s, o in zip(frame["stage"], frame["outcome"], strict=True)})
    counts = (
        frame.assign(kind=frame["stage"].astype(str) + " " + frame["outcome"].astype(str))
        .pivot_table(index=key, columns="kind", values="event_id", aggfunc="count", fill_value=0)
        .reindex(columns=kinds, fill_value=0)
    )
    spans = frame.groupby(key)["origin_time"].agg(["min", "max"])
    peak = max(int(counts.sum(axis=1).max()), 1)
    head = "".join(f"<th>{escape(k)}</th>" for k in kinds)
    rows = []
    value: Any  # a value of the `key` column
    for value, row in counts.iterrows():
        total = int(row.sum())
        cells = "".join(f"<td>{int(row[k]):,}</td>" for k in kinds)
        first, last = spans.loc[value, "min"], spans.loc[value, "max"]
        rows.append(
            f"<tr><td>{show(value)}</td>{cells}<td class='total'>{total:,}</td>"
            f"<td><span class='hbar' style='width:{120 * total / peak:.0f}px'></span></td>"
            f"<td>{first:%H:%M:%S}</td><td>{last:%H:%M:%S}</td></tr>"
        )
    return (
        f"<div class='scroll short'><table class='{css}'><tr><th>{label}</th>{head}"
        f"<th>total</th><th></th><th>first origin</th><th>last origin</th></tr>"
        f"{''.join(rows)}</table></div>"
    )


# -- schema IDs: the cause, shown -------------------------------------------------------


def _maybe(value: Any) -> Any:
    """A stored value, or None where the store has none (pandas reads NULL as NaN/NaT)."""
    return None if value is None or pd.isna(value) else value


def schema_uses(frame: pd.DataFrame) -> list[SchemaIdUse]:
    """A stored window's schema ID rows (ResultStore.schema_ids) as the engine made them."""
    uses = []
    r: Any  # a schema ID's row: its fields hold whatever its columns do
    for r in frame.itertuples():
        first_seen = _maybe(r.first_seen)
        uses.append(
            SchemaIdUse(
                str(r.stage),
                str(r.topic),
                int(r.schema_id),
                int(r.messages),
                _maybe(r.first_time),
                None if _maybe(r.first_partition) is None else int(r.first_partition),
                None if _maybe(r.first_offset) is None else int(r.first_offset),
                _maybe(r.last_time),
                None if _maybe(r.last_partition) is None else int(r.last_partition),
                None if _maybe(r.last_offset) is None else int(r.last_offset),
                int(r.events),
                _maybe(r.next_stage),
                int(r.lost_next),
                None if first_seen is None else bool(first_seen),
            )
        )
    return uses


def causes_html(uses: list[SchemaIdUse]) -> str:
    """The sentences naming a new schema ID as the cause of the next hop's loss."""
    said = [(u, attribution(u)) for u in uses]
    items = "".join(
        f"<li data-schema-id='{u.schema_id}'>{escape(f'{u.next_stage}: {text}')}</li>"
        for u, text in said
        if text is not None
    )
    return f"<h2>Likely cause</h2><ul class='causes'>{items}</ul>" if items else ""


def schema_ids_html(uses: list[SchemaIdUse]) -> str:
    """Per Kafka stage and schema ID: its messages in the window, its events, their loss next."""
    if not uses:
        return ""
    rows = []
    for u in uses:
        new = {True: "new", False: "seen before", None: "unknown"}[u.first_seen]
        first = "-" if u.first_time is None else f"{u.first_time:%H:%M:%S.%f}"[:-3]
        last = "-" if u.last_time is None else f"{u.last_time:%H:%M:%S.%f}"[:-3]
        at_first = "" if u.first_time is None else f" [{u.first_partition}]@{u.first_offset}"
        at_last = "" if u.last_time is None else f" [{u.last_partition}]@{u.last_offset}"
        rows.append(
            f"<tr data-stage='{escape(u.stage)}' data-schema-id='{u.schema_id}'>"
            f"<td>{escape(u.stage)}</td><td>{escape(u.topic)}</td><td>{u.schema_id}</td>"
            f"<td>{u.messages:,}</td><td>{first}{at_first}</td><td>{last}{at_last}</td>"
            f"<td>{u.events:,}</td><td>{escape(u.next_stage or '-')}</td>"
            f"<td class='lost'>{u.lost_next:,}</td><td>{pct(u.lost_rate)}</td>"
            f"<td class='first-seen'>{new}</td></tr>"
        )
    return (
        "<h2>Schema IDs</h2><div class='scroll short'><table class='schema-ids'><tr>"
        "<th>stage</th><th>topic</th><th>schema id</th><th>messages</th>"
        "<th>first (UTC)</th><th>last (UTC)</th><th>events</th><th>next stage</th>"
        "<th>lost there</th><th>share lost</th><th>in earlier windows</th></tr>"
        f"{''.join(rows)}</table></div>"
    )
