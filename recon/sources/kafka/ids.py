"""Event IDs (and times) out of the fetched bytes: keys, headers, JSON and Avro values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Message

from recon.model import SCHEMA_ID_ROWS, BadRecord, SchemaIds, kafka_place
from recon.sources.base import ledger_table, nul_ids
from recon.sources.kafka import avro
from recon.sources.kafka.config import Config


def message_headers(msg: Message) -> Iterable[tuple[str, bytes | None]]:
    """A consumed message's headers, (name, bytes or None) pairs.

    confluent-kafka types them as a producer's too: a dict, or str values.
    """
    return cast("Iterable[tuple[str, bytes | None]]", msg.headers() or ())


def picker(id_spec: str) -> Any:
    """The per-message accessor of the bytes that hold the event ID."""
    if id_spec == "key":
        return Message.key
    if id_spec.startswith("header:"):
        name = id_spec.split(":", 1)[1]

        def header(m: Message) -> bytes | None:
            for key, value in message_headers(m):
                if key == name:
                    return value
            return None

        return header
    return Message.value


def extract_ids(cfg: Config, raw: pa.Table) -> tuple[pa.Table, list[BadRecord]]:
    """Turn raw bytes into event IDs; every record without a usable ID is a BadRecord."""
    json_path = cfg.id.split(":", 1)[1] if cfg.id.startswith("json:") else None
    ids = None if json_path else _plain_ids(raw["raw"])
    bad: list[BadRecord] = []
    if ids is None:
        raw, ids, bad = _checked_ids(cfg, raw, json_path)
    table = ledger_table(ids, timestamps(raw["ts_ms"]), cfg.topic, raw["partition"], raw["offset"])
    return table, bad


def without_nul(
    cfg: Config, table: pa.Table, bad: list[BadRecord]
) -> tuple[pa.Table, list[BadRecord]]:
    """Records whose ID holds U+0000 (valid UTF-8, but no store keeps it) are unreadable."""
    nul = nul_ids(table["event_id"])
    if nul is None or not pc.any(nul).as_py():
        return table, bad
    what = "key" if cfg.id == "key" else cfg.id
    rows = table.filter(nul)
    reasons = pa.array([f"{what} holds a NUL"] * rows.num_rows, pa.string())
    named = _bad_records(cfg, rows["partition"], rows["offset"], reasons, rows["stage_time"])
    return table.filter(pc.invert(nul)), bad + named


def _bad_records(
    cfg: Config, partition: Any, offset: Any, reason: Any, time: Any
) -> list[BadRecord]:
    """A BadRecord per record (equal-length columns), named by where it lives."""
    return [
        BadRecord(kafka_place(cfg.topic, p, o), r, time=t)
        for p, o, r, t in zip(
            *(c.to_pylist() for c in (partition, offset, reason, time)), strict=True
        )
    ]


def _checked_ids(
    cfg: Config, raw: pa.Table, json_path: str | None
) -> tuple[pa.Table, pa.ChunkedArray, list[BadRecord]]:
    """The records with a usable ID and their IDs; a BadRecord for each of the others."""
    if json_path:
        ids, reasons = _json_ids(raw["raw"], json_path)
    else:
        ids, reasons = _text_ids(raw["raw"], "key" if cfg.id == "key" else cfg.id)
    bad_mask = pc.is_null(ids)
    if not pc.any(bad_mask).as_py():
        return raw, ids, []
    rows = raw.filter(bad_mask)
    bad = _bad_records(
        cfg,
        rows["partition"],
        rows["offset"],
        reasons.filter(bad_mask),
        timestamps(rows["ts_ms"]),
    )
    keep = pc.invert(bad_mask)
    return raw.filter(keep), ids.filter(keep), bad


def avro_ids(cfg: Config, raw: pa.Table) -> tuple[pa.Table, list[BadRecord], SchemaIds]:
    """The IDs (and times) in Avro values; a BadRecord for each value without them.

    A bad record's time is its record timestamp, whatever `time:` says: its
    payload's time is what could not be read. Also every framed message's schema
    ID, readable or not (engine/schemas.py counts them per window).
    """
    assert cfg.schema_registry is not None
    reg = cfg.schema_registry
    time_path = cfg.time.split(":", 1)[1] if cfg.time else None
    decoded = avro.decode(
        raw["raw"], lambda sid: avro.fetch(reg, sid), cfg.id.split(":", 1)[1], time_path
    )
    stamps = timestamps(raw["ts_ms"])
    framed = pa.array(decoded.schema_id >= 0)
    schema_ids = SchemaIds(
        cfg.topic,
        pa.table(
            [raw["partition"], raw["offset"], stamps, pa.array(decoded.schema_id)],
            schema=SCHEMA_ID_ROWS,
        ).filter(framed),
    )
    bad_mask = pc.is_valid(decoded.reason)
    times = decoded.times if decoded.times is not None else stamps
    if not pc.any(bad_mask).as_py():
        table = ledger_table(decoded.ids, times, cfg.topic, raw["partition"], raw["offset"])
        return table, [], schema_ids
    bad = _bad_records(
        cfg,
        raw["partition"].filter(bad_mask),
        raw["offset"].filter(bad_mask),
        decoded.reason.filter(bad_mask),
        stamps.filter(bad_mask),
    )
    keep = pc.invert(bad_mask)
    kept = raw.filter(keep)
    table = ledger_table(
        decoded.ids.filter(keep),
        times.filter(keep),
        cfg.topic,
        kept["partition"],
        kept["offset"],
    )
    return table, bad, schema_ids


def timestamps(ts_ms: pa.ChunkedArray) -> pa.ChunkedArray:
    """Kafka's millisecond stamps as UTC timestamps."""
    return pc.cast(pc.multiply(ts_ms, 1000), pa.timestamp("us", tz="UTC"))


def _plain_ids(raw: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """The IDs when every key (or header) is present, non-empty and UTF-8; else None.

    The usual case costs a check and no copy: the bytes are reinterpreted as text
    (DuckDB's decode of a 5 M-message read made a second copy of them beside the
    first). A read with any unusable record goes through `_text_ids`, which names
    each one.
    """
    if raw.null_count or (len(raw) and pc.min(pc.binary_length(raw)).as_py() == 0):
        return None
    try:
        return raw.cast(pa.string())
    except pa.ArrowInvalid:  # some record is not UTF-8: `_text_ids` reports which
        return None


def _text_ids(raw: pa.ChunkedArray, what: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    con = duckdb.connect()
    con.register("raw", pa.table({"raw": raw}))
    # Invalid UTF-8 and empty IDs are unusable, like a missing key or header.
    result = con.sql(
        """
        SELECT CASE WHEN raw IS NULL OR octet_length(raw) = 0 OR NOT utf8_ok THEN NULL
                    ELSE decode(raw) END AS id,
               CASE WHEN raw IS NULL THEN 'no ' || $what
                    WHEN octet_length(raw) = 0 THEN 'empty ' || $what
                    WHEN NOT utf8_ok THEN $what || ' is not valid UTF-8' END AS reason
        FROM (SELECT raw, try(decode(raw)) IS NOT NULL AS utf8_ok FROM raw)
        """,
        params={"what": what},  # a header's name is the user's text: never spliced in
    ).to_arrow_table()
    return result["id"], result["reason"]


def _json_ids(raw: pa.ChunkedArray, path: str) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    con = duckdb.connect()
    con.register("raw", pa.table({"raw": raw}))
    json_path = "$." + path
    result = con.sql(
        """
        WITH t AS (
          SELECT raw, try(decode(raw)) AS txt FROM raw
        ), j AS (
          SELECT raw, txt, txt IS NOT NULL AND json_valid(txt) AS ok FROM t
        ), v AS (
          SELECT raw, ok, CASE WHEN ok THEN json_extract(txt, $path) END AS node FROM j
        )
        SELECT CASE WHEN ok AND node IS NOT NULL AND json_type(node) IN ('VARCHAR', 'BIGINT',
                    'UBIGINT') AND length(json_extract_string(node, '$')) > 0
                    THEN json_extract_string(node, '$') END AS id,
               CASE WHEN raw IS NULL THEN 'no value'
                    WHEN NOT ok THEN 'value is not valid JSON'
                    WHEN node IS NULL OR json_type(node) = 'NULL' THEN 'no field ' || $name
                    WHEN json_type(node) NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT')
                      THEN 'field ' || $name || ' is a ' || json_type(node)
                    WHEN length(json_extract_string(node, '$')) = 0
                      THEN 'field ' || $name || ' is empty' END AS reason
        FROM v
        """,
        params={"path": json_path, "name": path},
    ).to_arrow_table()
    return result["id"], result["reason"]
