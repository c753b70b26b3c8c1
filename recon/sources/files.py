"""`files` source: JSON-lines or CSV receipt logs (gateway access logs) matched by a glob.

The fast path is Arrow's JSON/CSV reader. A JSON-lines file Arrow rejects is
re-read line by line only to name the bad lines; a CSV row with the wrong number
of fields is named by Arrow's reader. Bad lines are counted, never dropped silently.
"""

from __future__ import annotations

import glob
import json
import os
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
        raw, file_bad = _read_strings(cfg, path)
        table, more_bad = _typed(cfg, path, raw)
        tables.append(table)
        bad += file_bad + more_bad
    table = pa.concat_tables(tables)
    in_window = pc.and_(
        pc.greater_equal(table["stage_time"], pa.scalar(window.start, table["stage_time"].type)),
        pc.less(table["stage_time"], pa.scalar(window.end, table["stage_time"].type)),
    )
    return LedgerRead(describe(cfg), table.filter(in_window), bad)


def _read_strings(cfg: Config, path: str) -> tuple[pa.Table, list[BadRecord]]:
    """ID and time as strings, with their 1-based line numbers."""
    if _format(cfg, path) == "csv":
        return _csv_strings(cfg, path)
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
        return _jsonl_line_by_line(cfg, path)
    lines = pa.array(range(1, 1 + table.num_rows), pa.int64())
    return table.append_column("line", lines), []


def _csv_strings(cfg: Config, path: str) -> tuple[pa.Table, list[BadRecord]]:
    """A CSV file's ID and time columns; a row with the wrong number of fields is a BadRecord.

    Lines are the CSV's rows, the header being line 1 (physical lines, unless a
    quoted field spans several). Arrow numbers the rows it rejects only when it
    reads on one thread, so a file with rejected rows is read again that way.
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
