"""`files` source: JSON-lines or CSV receipt logs (gateway access logs) matched by a glob.

Every physical line (ended by a newline) is accounted for: read, skipped as blank, or
counted unreadable and named `file:line`. The fast path is Arrow's JSON/CSV
reader. A JSON-lines file Arrow rejects (or that is not all UTF-8: Arrow would
replace its bad bytes) is re-read line by line only to name the bad lines. A
CSV line with an odd number of '"' (an unterminated quote: RFC 4180's escaped
quotes come in pairs) is unreadable, and left out before Arrow reads the rest
one line per row, so a quoted field may not span lines; a row with the wrong
number of fields is named by Arrow's reader. Bad lines are counted, never
dropped silently.

Times are read as every source reads them (`utc_times`: ISO 8601, wall times in
`timezone`, epochs in `time_unit`), IDs too (`canonical_ids`: a JSON integer ID
in decimal). A time of digits only (a JSON number too) without `time_unit` is
unreadable on its line, not an error of the whole log. A bad line counts in the
window of its own time when it has one (for digits without `time_unit`, the
epoch their size suggests), else of the previous readable line of its file (logs
are appended in time order), else the next one, else at no time.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from recon.errors import SourceError
from recon.model import BadRecord, LedgerRead, Window
from recon.sources.base import (
    TimedSource,
    canonical_ids,
    in_window,
    ledger_table,
    shown,
    utc_times,
)
from recon.sources.kind import Kind


class Config(TimedSource):
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
    """Rows of every matching file whose time is in `window`, and the bad lines that count in it.

    A bad line without a time of its own or of a neighbour counts in every read
    (BadRecord.counts_in places it at midnight UTC).
    """
    paths = sorted(glob.glob(cfg.path, recursive=True))
    if not paths:
        raise SourceError(f"{describe(cfg)}: no file matches")
    tables, bad = [], []
    for path in paths:
        lines = _Lines.of(path)
        if _format(cfg, path) == "csv":
            raw, line_bad = _csv_rows(cfg, path, lines)
        else:
            raw, line_bad = _jsonl_rows(cfg, path, lines)
        table, file_bad = _ledger(cfg, path, raw, line_bad)
        tables.append(table.filter(in_window(table["stage_time"], window)))
        bad += [b for b in file_bad if b.time is None or window.start <= b.time < window.end]
    return LedgerRead(describe(cfg), pa.concat_tables(tables), bad)


@dataclass
class _Lines:
    """A file's bytes and its physical lines: line i+1 is data[starts[i]:stops[i]] (no newline)."""

    data: bytes
    starts: np.ndarray
    stops: np.ndarray

    @classmethod
    def of(cls, path: str) -> _Lines:
        try:
            with pa.input_stream(path, compression="detect") as stream:
                data = stream.read()
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{path}: {exc}") from exc
        ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n"))
        starts = np.concatenate([[0], ends + 1]).astype(np.int64)
        stops = np.concatenate([ends, [len(data)]]).astype(np.int64)
        if starts[-1] == len(data):  # nothing after the last '\n': no line there
            starts, stops = starts[:-1], stops[:-1]
        return cls(data, starts, stops)

    @property
    def array(self) -> np.ndarray:
        return np.frombuffer(self.data, np.uint8)

    def empty(self) -> np.ndarray:
        """Per line: no byte but a final carriage return (a blank line to Arrow's CSV reader)."""
        data, length = self.array, self.stops - self.starts
        carriage = (length > 0) & (data[np.maximum(self.stops - 1, 0)] == ord("\r"))
        empty: np.ndarray = length - carriage == 0
        return empty

    def blank(self) -> np.ndarray:
        """Per line: only JSON whitespace (a blank line to Arrow's JSON reader)."""
        if not len(self.starts):
            return np.zeros(0, bool)
        data = self.array
        ink = ~((data == 32) | (data == 9) | (data == 13) | (data == 10))
        # Each line's bytes run to the next line's start ('\n' included, which is no ink).
        return ~np.logical_or.reduceat(ink, self.starts)

    def odd_quotes(self) -> np.ndarray:
        """Per line: an odd number of '"' (a quote left open)."""
        if not len(self.starts):
            return np.zeros(0, bool)
        quotes = (self.array == ord('"')).view(np.uint8)
        return np.bitwise_xor.reduceat(quotes, self.starts).astype(bool)

    def inner_carriage_returns(self) -> np.ndarray:
        """Per line: a carriage return before its end (Arrow's CSV reader ends a row there)."""
        data = self.array
        final = (self.stops > self.starts) & (data[np.maximum(self.stops - 1, 0)] == ord("\r"))
        returns = data == ord("\r")
        if int(np.count_nonzero(returns)) == int(np.count_nonzero(final)):
            return np.zeros(len(self.starts), bool)
        counts = np.add.reduceat(returns, self.starts, dtype=np.int64)
        inner: np.ndarray = counts - final > 0
        return inner

    def without(self, lines: np.ndarray) -> bytes:
        """The file's bytes without the lines of 0-based indices `lines` (and their newlines)."""
        if not len(lines):
            return self.data
        edges = np.zeros(len(self.data) + 1, np.int8)
        ends = np.append(self.starts, len(self.data))[lines + 1]
        np.add.at(edges, self.starts[lines], 1)
        np.add.at(edges, ends, -1)
        dropped = np.cumsum(edges[:-1], dtype=np.int8) > 0
        return self.array[~dropped].tobytes()


def _csv_rows(cfg: Config, path: str, lines: _Lines) -> tuple[pa.Table, list[tuple[int, str]]]:
    """A CSV file's ID and time fields (as binary), with their physical lines; bad lines.

    A line with an unterminated quote or a carriage return inside is bad and left out before
    Arrow reads the rest one line per row (newlines_in_values off); blank lines
    are skipped by both. Each row Arrow returns or rejects is thus the next line
    kept, exactly. Arrow numbers the rows it rejects only when it reads on one
    thread, so a file with rejected rows is read again that way.
    """
    empty = lines.empty()
    unterminated = lines.odd_quotes() & ~empty
    inner_cr = lines.inner_carriage_returns() & ~empty & ~unterminated
    filled = np.flatnonzero(~empty)
    if not len(filled):  # an empty log (just rotated): no header, no rows
        return _raw([], [], []), []
    header = filled[0]
    if unterminated[header] or inner_cr[header]:
        raise SourceError(f"{path}:{header + 1}: the CSV header line cannot be read")
    dropped = np.flatnonzero(unterminated | inner_cr)
    kept = np.setdiff1d(filled, dropped, assume_unique=True) + 1  # header first, 1-based
    data = pa.py_buffer(lines.without(dropped))
    for threads in (True, False):
        rejected: list[tuple[int | None, str]] = []

        def reject(row: pacsv.InvalidRow, into: list[tuple[int | None, str]] = rejected) -> str:
            into.append(
                (row.number, f"{row.actual_columns} fields, expected {row.expected_columns}")
            )
            return "skip"

        try:
            table = pacsv.read_csv(
                pa.BufferReader(data),
                read_options=pacsv.ReadOptions(use_threads=threads),
                parse_options=pacsv.ParseOptions(
                    newlines_in_values=False, invalid_row_handler=reject
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types={cfg.id: pa.binary(), cfg.time: pa.binary()},
                    include_columns=[cfg.id, cfg.time],
                ),
            )
        except pa.ArrowException as exc:  # no such column, an unparseable header
            raise SourceError(f"{path}: {exc}") from exc
        if not rejected or rejected[0][0] is not None:
            break
    # Arrow numbers rows from the header's 1: row n is the n-th line kept.
    numbered = [(number, reason) for number, reason in rejected if number is not None]
    if len(numbered) < len(rejected):  # read on one thread, Arrow numbers every row
        raise SourceError(f"{path}: Arrow rejected rows without saying which")
    skipped = np.array([number for number, _ in numbered], np.int64)
    bad = [(int(kept[number - 1]), reason) for number, reason in numbered]
    bad += [(int(i) + 1, "unterminated quote") for i in np.flatnonzero(unterminated)]
    bad += [(int(i) + 1, "a carriage return inside the line") for i in np.flatnonzero(inner_cr)]
    rows = np.delete(kept, np.concatenate([[0], skipped - 1]))
    if len(rows) != table.num_rows:  # every kept line is one row: a miscount is a bug
        raise SourceError(f"{path}: {table.num_rows} rows read from {len(rows)} lines")
    raw = pa.table(
        {"id": table[cfg.id], "time": table[cfg.time], "line": pa.array(rows, pa.int64())}
    )
    return raw, bad


def _raw(
    ids: list[Any], times: list[Any], lines: list[int], problems: list[str | None] | None = None
) -> pa.Table:
    columns = {
        "id": _json_column(ids),
        "time": _json_column(times),
        "line": pa.array(lines, pa.int64()),
    }
    if problems is not None:
        columns["problem"] = pa.array(problems, pa.string())
    return pa.table(columns)


def _jsonl_rows(cfg: Config, path: str, lines: _Lines) -> tuple[pa.Table, list[tuple[int, str]]]:
    """A JSON-lines file's ID and time fields, with their physical lines; bad lines."""
    if _utf8(lines.data):
        table = _arrow_json(cfg, lines.data)
        filled = np.flatnonzero(~lines.blank()) + 1
        if table is not None and table.num_rows == len(filled):
            raw = pa.table({"id": table[cfg.id], "time": table[cfg.time], "line": pa.array(filled)})
            return raw, []
    return _jsonl_line_by_line(cfg, lines)


def _utf8(data: bytes) -> bool:
    """Whether all of `data` is UTF-8 (Arrow's JSON reader replaces bytes that are not)."""
    offsets = pa.py_buffer(np.array([0, len(data)], np.int64))
    whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        whole.cast(pa.large_string())
    except pa.ArrowInvalid:  # the answer, not an error: the file is read line by line
        return False
    return True


def _arrow_json(cfg: Config, data: bytes) -> pa.Table | None:
    """The ID and time fields by Arrow's JSON reader; None when it rejects the file.

    Each is text or, when every one is an integer, int64. A bad line or mixed
    types (a string here, a number there) are left to the line-by-line reader.
    """
    types = {cfg.id: pa.string(), cfg.time: pa.string()}
    for _ in range(3):  # each retry makes one more field int64
        schema = pa.schema(list(types.items()))
        try:
            return pajson.read_json(
                pa.BufferReader(data),
                parse_options=pajson.ParseOptions(
                    explicit_schema=schema, unexpected_field_behavior="ignore"
                ),
            )
        except pa.ArrowInvalid as exc:  # the line-by-line reader names what is wrong
            numbers = [
                name
                for name, typ in types.items()
                if typ == pa.string()
                and f"Column(/{name}) changed from string to number" in str(exc)
            ]
            if not numbers:
                return None
            types[numbers[0]] = pa.int64()
    return None


def _jsonl_line_by_line(cfg: Config, lines: _Lines) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Each line parsed on its own, to name the bad ones.

    A line that is not a JSON object is bad; an ID that is not text or an integer
    is a problem of its row, and one that is not UTF-8 too (`canonical_ids` names it).
    """
    ids, times, numbers, problems, bad = [], [], [], [], []
    for number, line in enumerate(lines.data.split(b"\n"), start=1):
        if not line.strip(b" \t\r\n"):
            continue
        try:
            record = json.loads(line.decode("utf-8", "surrogateescape"))
        except json.JSONDecodeError as exc:
            bad.append((number, f"not JSON: {exc.msg}"))
            continue
        if not isinstance(record, dict):
            bad.append((number, "not a JSON object"))
            continue
        value = record.get(cfg.id)
        problem = None
        if isinstance(value, bool) or (value is not None and not isinstance(value, str | int)):
            problem, value = f"{cfg.id} is a JSON {_JSON_TYPES[type(value)]}", None
        ids.append(value)
        times.append(record.get(cfg.time))
        numbers.append(number)
        problems.append(problem)
    return _raw(ids, times, numbers, problems), bad


_JSON_TYPES = {bool: "boolean", float: "number", dict: "object", list: "array"}


def _json_column(values: list[Any]) -> pa.Array:
    """JSON values as one column: int64 when every one is an integer, else bytes.

    A string's bytes are the file's own, bad ones kept, so that UTF-8 is judged
    by `canonical_ids`/`utc_times`; another value's are its JSON text.
    """
    present = [v for v in values if v is not None]
    if (
        present
        and all(isinstance(v, int) and not isinstance(v, bool) for v in present)
        and all(-(1 << 63) <= v < (1 << 63) for v in present)
    ):
        return pa.array(values, pa.int64())
    return pa.array([None if v is None else _json_bytes(v) for v in values], pa.binary())


def _json_bytes(value: object) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8", "surrogateescape")  # the file's own bytes
        except UnicodeEncodeError:  # an escaped lone surrogate (\ud800): not UTF-8 either
            return value.encode("utf-8", "surrogatepass")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    return json.dumps(value).encode()


def _ledger(
    cfg: Config, path: str, raw: pa.Table, line_bad: list[tuple[int, str]]
) -> tuple[pa.Table, list[BadRecord]]:
    """The file's rows as a ledger (at every time), and its bad lines.

    Each bad line has the time it counts at: its own; else, for a time of digits
    only without `time_unit`, the epoch its size suggests (`_epoch_guess`); else the
    previous readable line's (a line whose time was read); else the next one's;
    else None.
    """
    values = raw["time"]
    if cfg.time_unit is None and pa.types.is_integer(values.type):
        # Numbers without a unit cannot be read: each line is unreadable (as ISO text that
        # does not parse is), not the whole log, and says to set time_unit.
        values = values.cast(pa.string())
    times, _ = utc_times(values, cfg.time, path, cfg.timezone, cfg.time_unit)
    no_id = f"no {cfg.id}"
    ids, why = canonical_ids(raw["id"], cfg.id, path, null=no_id, empty=no_id)
    bad_row = pc.is_null(times)
    if why is not None:
        bad_row = pc.or_(bad_row, pc.is_valid(why))
    if "problem" in raw.column_names:
        bad_row = pc.or_(bad_row, pc.is_valid(raw["problem"]))
    good = pc.invert(bad_row)
    table = ledger_table(ids.filter(good), times.filter(good), os.path.basename(path))

    readable = pc.is_valid(times)
    read_lines = np.asarray(raw["line"].filter(readable))
    read_times = np.asarray(times.filter(readable).cast(pa.int64()))

    def neighbour(line: int) -> int | None:
        at = int(np.searchsorted(read_lines, line))
        if at > 0:
            return int(read_times[at - 1])
        return int(read_times[at]) if at < len(read_lines) else None

    places: list[tuple[int, str, int | None]] = [
        (line, reason, neighbour(line)) for line, reason in line_bad
    ]
    if pc.any(bad_row).as_py():
        rows = raw.filter(bad_row)
        columns = [
            rows["line"].to_pylist(),
            (rows["problem"] if "problem" in raw.column_names else pa.nulls(len(rows))).to_pylist(),
            (why.filter(bad_row) if why is not None else pa.nulls(len(rows))).to_pylist(),
            values.filter(bad_row).to_pylist(),
            times.filter(bad_row).cast(pa.int64()).to_pylist(),
        ]
        for line, problem, id_reason, raw_time, own in zip(*columns, strict=True):
            guess = _epoch_guess(raw_time) if cfg.time_unit is None else None
            reason = problem or id_reason
            if reason is None and raw_time is None:
                reason = f"no {cfg.time}"
            elif reason is None:
                reason = f"bad {cfg.time}: {shown(raw_time)}"
                if guess is not None:
                    reason += " (digits only: set time_unit to read epochs)"
            at = next((t for t in (own, guess) if t is not None), None)
            places.append((line, reason, at if at is not None else neighbour(line)))
    bad = [
        BadRecord(f"{path}:{line}", reason, time=None if t is None else _instant(t))
        for line, reason, t in sorted(places, key=lambda p: p[0])
    ]
    return table, bad


# Where an epoch of digits read without time_unit is placed, by its size: [low, high) and
# the µs per unit (None: ns, floored). Any of them is between 1973 and 5138.
_GUESSES = (
    (10**8, 10**11, 1_000_000),
    (10**11, 10**14, 1_000),
    (10**14, 10**17, 1),
    (10**17, 10**20, None),
)


def _epoch_guess(raw: object) -> int | None:
    """The instant (µs) a time of digits only most likely means, to place its bad line.

    Only where the line counts: the line stays unreadable, since its unit is a guess.
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str) or not (raw.isascii() and raw.isdigit()):
        return None
    value = int(raw)
    for low, high, per in _GUESSES:
        if low <= value < high:
            return value // 1000 if per is None else value * per
    return None


def _instant(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


KIND = Kind("files", Config, read, paths=("path",))
