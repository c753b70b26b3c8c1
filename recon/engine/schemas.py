"""Schema IDs on Kafka stages per window, and a loss that starts with a new one.

A producer that moves to a new schema version and a consumer that cannot read
it (a stale schema-registry cache) is the incident recon exists for: the loss
shows at the hop after the topic, and its cause is in the messages' headers.
Per window and Kafka stage read with a schema registry, `uses` counts the
messages of each schema ID (by record time, readable or not) and, joining the
stage's rows to its messages by partition and offset, the window's events
that carried each ID and how many of them are lost at the next hop.

When a window is stored, `mark_first_seen` says which IDs are new (no earlier
stored window of the pipeline holds a message with them on that stage), and
`attribution` turns a new ID whose events are lost at the next hop into the
sentence the notes, the report and the dashboard show.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import duckdb
import pyarrow as pa

from recon.model import SchemaIdUse, StageInput
from recon.timeutil import iso

# (stage, topic) -> the schema IDs its messages carried in earlier windows.
Known = dict[tuple[str, str], set[int]]
# A message's record time, partition and offset (none: no message in the window).
_Place = tuple[datetime | None, int | None, int | None]
_NOWHERE: _Place = (None, None, None)


def uses(
    con: duckdb.DuckDBPyConnection, stages: list[StageInput], missing: pa.Table, n_windows: int
) -> list[list[SchemaIdUse]]:
    """Per window, its schema IDs on every stage whose read has them, in stage then ID order.

    `con` holds the engine's `wins`, `seen` (the cohort pairs) and `s{i}` (ledgers);
    `missing` is the missing events with their window `w`.
    """
    per_window: list[list[SchemaIdUse]] = [[] for _ in range(n_windows)]
    con.register("schema_missing", missing.select(["w", "event_id", "stage", "outcome"]))
    for i, stage in enumerate(stages):
        read = stage.ledger.schema_ids
        if read is None:
            continue
        nxt = stages[i + 1].name if i + 1 < len(stages) else None
        con.register(f"k{i}", read.table)
        counted = _messages(con, i)
        events = _events(con, i, nxt)
        for w, sid in sorted(counted.keys() | events.keys()):
            first, last, n = counted.get((w, sid), (_NOWHERE, _NOWHERE, 0))
            seen, lost = events.get((w, sid), (0, 0))
            per_window[w].append(
                SchemaIdUse(stage.name, read.topic, sid, n, *first, *last, seen, nxt, lost)
            )
    return per_window


def _messages(
    con: duckdb.DuckDBPyConnection, i: int
) -> dict[tuple[int, int], tuple[_Place, _Place, int]]:
    """(window, schema ID) -> the first and last message stamped in the window, and how many."""
    rows = con.execute(f"""
        SELECT w.w, k.schema_id, count(*),
               min(struct_pack(t := k.time, p := k.partition, o := k."offset")),
               max(struct_pack(t := k.time, p := k.partition, o := k."offset"))
        FROM k{i} k JOIN wins w ON k.time >= w.ws AND k.time < w.we
        GROUP BY w.w, k.schema_id""").fetchall()
    return {
        (int(w), int(sid)): ((a["t"], a["p"], a["o"]), (b["t"], b["p"], b["o"]), int(n))
        for w, sid, n, a, b in rows
    }


def _events(
    con: duckdb.DuckDBPyConnection, i: int, nxt: str | None
) -> dict[tuple[int, int], tuple[int, int]]:
    """(window, schema ID) -> cohort events seen at stage i in such a message, and lost next.

    Distinct events: one seen twice (a producer's retry) counts once per ID it
    was seen with. The stage's rows are searched over the range the engine
    searches it (origin or downstream), so these events are the hop's.
    """
    lo, hi = ("olo", "ohi") if i == 0 else ("dlo", "dhi")
    lost = "FALSE" if nxt is None else "m.event_id IS NOT NULL"
    rows = con.execute(
        f"""
        WITH ev AS (
          SELECT DISTINCT w.w, k.schema_id, l.event_id
          FROM k{i} k
          JOIN s{i} l ON l.partition = k.partition AND l."offset" = k."offset"
          JOIN wins w ON l.stage_time >= w.{lo} AND l.stage_time < w.{hi}
          JOIN seen s ON s.w = w.w AND s.event_id = l.event_id
          WHERE s.origin_time >= w.ws AND s.origin_time < w.we)
        SELECT ev.w, ev.schema_id, count(*), count(*) FILTER (WHERE {lost})
        FROM ev LEFT JOIN schema_missing m
          ON m.w = ev.w AND m.event_id = ev.event_id AND m.stage = $next AND m.outcome = 'lost'
        GROUP BY ev.w, ev.schema_id""",
        {"next": nxt or ""},
    ).fetchall()
    return {(int(w), int(sid)): (int(n), int(gone)) for w, sid, n, gone in rows}


def notes(found: list[SchemaIdUse]) -> list[str]:
    """A note per schema ID of a window: its messages, its events and their loss next."""
    out = []
    for u in found:
        text = f"{u.stage}: schema id {u.schema_id} on {u.topic}: {u.messages:,} message"
        text += "" if u.messages == 1 else "s"
        if u.first_time is not None and u.last_time is not None:
            text += (
                f" from {iso(u.first_time)} at [{u.first_partition}]@{u.first_offset}"
                f" to {iso(u.last_time)} at [{u.last_partition}]@{u.last_offset}"
            )
        text += f"; {u.events:,} of the window's events"
        if u.next_stage is not None:
            text += f", {u.lost_next:,} of them lost at {u.next_stage}"
        out.append(text)
    return out


def mark_first_seen(found: list[SchemaIdUse], known: Known) -> None:
    """Set each use's `first_seen` from the IDs `known` on its stage before its window.

    New: messages in this window carry it, and earlier windows hold messages of
    the stage, none with it. With no earlier messages of the stage known (its
    first window, or windows stored before recon kept schema IDs) nothing is
    new: None.
    """
    for u in found:
        before = known.get((u.stage, u.topic))
        u.first_seen = None if not before else (u.messages > 0 and u.schema_id not in before)


def remember(found: Iterable[SchemaIdUse], known: Known) -> None:
    """Add a window's schema IDs (those with messages in it) to what is known."""
    for u in found:
        if u.messages:
            known.setdefault((u.stage, u.topic), set()).add(u.schema_id)


def attribution(u: SchemaIdUse) -> str | None:
    """The sentence naming a new schema ID as the likely cause of the next hop's loss."""
    if not u.first_seen or not u.lost_next or u.first_time is None:
        return None
    return (
        f"schema id {u.schema_id} first seen {iso(u.first_time)} on {u.topic}; "
        f"{u.lost_next:,} of its {u.events:,} events ({u.lost_rate:.1%}) lost at {u.next_stage}"
    )
