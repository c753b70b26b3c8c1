"""`files` source: JSON-lines or CSV receipt logs (gateway access logs) matched by a glob.

The fast path is Arrow's JSON/CSV reader. A JSON-lines file Arrow rejects is
re-read line by line only to name the bad lines; a CSV row with the wrong number
of fields is named by Arrow's reader. Bad lines are counted, never dropped silently.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import replace
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from recon.errors import SourceError
from recon.model import BadRecord, LedgerRead, Window
from recon.sources.base import SourceConfig, ledger_table

KIND = "files"


class Config(SourceConfig):
    """Log files: `path` is a glob; `format` defaults from the extension."""

    source: Literal["files"]
    path: str
    format: Literal["jsonl", "csv"] | None = None
    time: str = "received_at"


def describe(cfg: Config) -> str:
    """Where this source reads from."""
    return f"files {cfg.path}"


def _format(cfg: Config, path: str) -> str:
    if cfg.format:
        return cfg.format
    return "csv" if path.endswith((".csv", ".csv.gz")) else "jsonl"


def read(cfg: Config, window: Window) -> LedgerRead:
    """Rows of every matching file whose time is in `window`."""
    paths = sorted(glob.glob(cfg.path, recursive=True))
    if not paths:
        raise SourceError(f"{describe(cfg)}: no file matches")
    tables, bad = [], []
    for path in paths:
        raw, file_bad, physical = _read_strings(cfg, path)
        table, more_bad = _typed(cfg, path, raw)
        tables.append(table)
        found = file_bad + more_bad
        bad += found if physical or not found else _at_physical_lines(path, found)
    table = pa.concat_tables(tables)
    in_window = pc.and_(
        pc.greater_equal(table["stage_time"], pa.scalar(window.start, table["stage_time"].type)),
        pc.less(table["stage_time"], pa.scalar(window.end, table["stage_time"].type)),
    )
    return LedgerRead(describe(cfg), table.filter(in_window), bad)


def _read_strings(cfg: Config, path: str) -> tuple[pa.Table, list[BadRecord], bool]:
    """ID and time as strings, with their 1-based numbers; whether those are physical lines.

    Arrow's readers skip blank lines: their rows are numbered without them
    (`_at_physical_lines` turns the numbers of bad rows into lines).
    """
    if _format(cfg, path) == "csv":
        return *_csv_strings(cfg, path), False
    schema = pa.schema([(cfg.id, pa.string()), (cfg.time, pa.string())])
    try:
        table = pajson.read_json(
            path,
            parse_options=pajson.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except OSError as exc:
        raise SourceError(f"{path}: {exc}") from exc
    except pa.ArrowInvalid:
        return *_jsonl_line_by_line(cfg, path), True
    lines = pa.array(range(1, 1 + table.num_rows), pa.int64())
    return table.append_column("line", lines), [], False


def _csv_strings(cfg: Config, path: str) -> tuple[pa.Table, list[BadRecord]]:
    """A CSV file's ID and time columns; a row with the wrong number of fields is a BadRecord.

    Rows are numbered from the header's 1, blank lines not counted. Arrow numbers
    the rows it rejects only when it reads on one thread, so a file with rejected
    rows is read again that way.
    """
    for threads in (True, False):
        rejected: list[tuple[int | None, str]] = []

        def reject(row: pacsv.InvalidRow, into: list = rejected) -> str:
            into.append(
                (row.number, f"{row.actual_columns} fields, expected {row.expected_columns}")
            )
            return "skip"

        try:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(use_threads=threads),
                parse_options=pacsv.ParseOptions(invalid_row_handler=reject),
                convert_options=pacsv.ConvertOptions(
                    column_types={cfg.id: pa.string(), cfg.time: pa.string()},
                    include_columns=[cfg.id, cfg.time],
                ),
            )
        except OSError as exc:
            raise SourceError(f"{path}: {exc}") from exc
        except pa.ArrowException as exc:  # no such column, bad encoding, unparseable header
            raise SourceError(f"{path}: {exc}") from exc
        if not rejected or rejected[0][0] is not None:
            break
    bad = [BadRecord(f"{path}:{number}", reason) for number, reason in rejected]
    # The kept rows' numbers: every row after the header but the rejected ones.
    skipped = np.array([number for number, _ in rejected], np.int64)
    rows = np.arange(2, 2 + table.num_rows + len(rejected), dtype=np.int64)
    lines = pa.array(np.setdiff1d(rows, skipped, assume_unique=True), pa.int64())
    return table.append_column("line", lines), bad


def _at_physical_lines(path: str, bad: list[BadRecord]) -> list[BadRecord]:
    """Bad records named `path:row` (blank lines not counted), renamed `path:line`.

    Exact unless a quoted CSV field spans lines. Only files with bad rows pay
    for this second pass.
    """
    with pa.input_stream(path, compression="detect") as stream:
        data = np.frombuffer(stream.read(), np.uint8)
    ends = np.flatnonzero(data == ord("\n"))
    starts = np.concatenate([[0], ends + 1])
    stops = np.concatenate([ends, [len(data)]])
    length = stops - starts
    carriage = (length > 0) & (data[np.maximum(stops - 1, 0)] == ord("\r")) if len(data) else 0
    filled = np.flatnonzero(length - carriage > 0)  # 0-based index of each non-blank line

    def renamed(record: BadRecord) -> BadRecord:
        head, _, row = record.where.rpartition(":")
        at = int(row) - 1
        return replace(record, where=f"{head}:{filled[at] + 1}") if at < len(filled) else record

    return [renamed(b) for b in bad]


def _jsonl_line_by_line(cfg: Config, path: str) -> tuple[pa.Table, list[BadRecord]]:
    ids, times, lines, bad = [], [], [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                bad.append(BadRecord(f"{path}:{number}", f"not JSON: {exc.msg}"))
                continue
            if not isinstance(record, dict):
                bad.append(BadRecord(f"{path}:{number}", "not a JSON object"))
                continue
            ids.append(_as_text(record.get(cfg.id)))
            times.append(_as_text(record.get(cfg.time)))
            lines.append(number)
    table = pa.table(
        {
            cfg.id: pa.array(ids, pa.string()),
            cfg.time: pa.array(times, pa.string()),
            "line": pa.array(lines, pa.int64()),
        }
    )
    return table, bad


def _as_text(value: object) -> str | None:
    return None if value is None else str(value)


def _typed(cfg: Config, path: str, raw: pa.Table) -> tuple[pa.Table, list[BadRecord]]:
    """Parse times (ISO 8601; no offset means UTC); rows without ID or time are BadRecords."""
    import duckdb  # here: the config imports every source kind, `recon check` never needs it

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("raw", raw)
    parsed = con.sql(
        f"""
        SELECT "{cfg.id}" AS event_id, TRY_CAST("{cfg.time}" AS TIMESTAMPTZ) AS t, line,
               "{cfg.time}" AS raw_time FROM raw
        """
    ).to_arrow_table()
    ok = pc.and_(
        pc.and_(pc.is_valid(parsed["event_id"]), pc.not_equal(parsed["event_id"], "")),
        pc.is_valid(parsed["t"]),
    )
    ok = pc.fill_null(ok, False)
    bad = []
    rejected = parsed.filter(pc.invert(ok))
    columns = ("event_id", "line", "raw_time", "t")
    for event_id, line, raw_time, t in zip(
        *(rejected[c].to_pylist() for c in columns), strict=True
    ):
        reason = f"no {cfg.id}" if not event_id else f"bad {cfg.time}: {raw_time!r}"
        bad.append(BadRecord(f"{path}:{line}", reason, time=t))
    good = parsed.filter(ok)
    return ledger_table(good["event_id"], good["t"], os.path.basename(path)), bad
