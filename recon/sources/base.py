"""What every source adapter shares: its config base and the ledger-building helpers.

Two rules live here and nowhere else, so that every reader applies them alike:
`utc_times` reads a time column of any supported encoding as instants, and
`canonical_ids` turns an ID column of any supported type into one text form.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from recon.errors import SourceError
from recon.model import LEDGER_SCHEMA, BadRecord, Window
from recon.timeutil import epoch_us, iso, parse_duration

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Strict(BaseModel):
    """Config models reject unknown keys and are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(Strict):
    """Limits of a hop: a loss rate (0.0001 = 0.01 %) and/or a count, and unreadable rows.

    `max_unreadable_rate` bounds unreadable / (unreadable + upstream) of a stage
    (the origin's upstream is its cohort); unset, it is the stage's loss rate.
    `min_events` (global only) is the origin's volume floor: one number, or one
    per time of day ("HH:MM" UTC, each from that time to the next).
    """

    loss_rate: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    max_lost: int | None = Field(default=None, ge=0)
    max_unreadable_rate: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    min_events: int | dict[str, int] | None = None


class SourceConfig(Strict):
    """Fields common to every stage and dead-letter sink, whatever its source kind."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    source: str
    id: str = "event_id"
    # Only for stages: per-stage threshold overrides.
    thresholds: Thresholds | None = None
    # Only for dead-letter sinks: the stage whose inbound hop this sink accounts for.
    stage: str | None = None

    def read_past_end(self) -> timedelta:
        """How far past a range's end its read goes (a Kafka read, for records out of order).

        A read of [a, b) ends exactly where a read of [b + this, c) starts, which is
        how `carry` reads the rest of a range without reading a row twice.
        """
        return timedelta(0)


TimeUnit = Literal["s", "ms", "us", "ns"]


class TimedSource(SourceConfig):
    """A source whose rows carry their time in a column (`time`): how its values are read.

    `timezone` (an IANA name, default UTC) is the zone of wall-clock values: a
    timestamp column without time zone, and ISO 8601 text without an offset. A
    wall time that happens twice (the hour repeated when the clocks go back) is
    its first occurrence; one that never happens (skipped when they go forward)
    is the instant of the jump. In Europe/Paris, 2026-10-25 02:30 is 00:30 UTC
    and 2026-03-29 02:30 is 01:00 UTC.

    `time_unit` (s, ms, us or ns) is the unit of an integer time column (an epoch)
    and of text of digits only; unset, an integer time column is an error (in a
    log file, each line with a number for a time is unreadable instead).
    """

    timezone: str = "UTC"
    time_unit: TimeUnit | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        # A config error, reported by pydantic with the key: nothing of a data path is lost.
        if name == "localtime":  # the machine's zone: a result would depend on the host
            raise ValueError("timezone 'localtime' depends on the host: give an IANA name")
        try:
            ZoneInfo(name)
            # Arrow's time zone database reads the wall times: it must know the name too.
            pc.assume_timezone(pa.array([0], pa.timestamp("us")), name)
        except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(
                f"unknown time zone {name!r}: give an IANA name such as Europe/Paris"
            ) from None
        return name


def ledger_table(
    event_id: pa.Array | pa.ChunkedArray,
    stage_time: pa.Array | pa.ChunkedArray,
    location: str | pa.Array | pa.ChunkedArray,
    partition: pa.Array | None = None,
    offset: pa.Array | None = None,
) -> pa.Table:
    """Assemble a table in LEDGER_SCHEMA, casting each column to its canonical type.

    `event_id` is text (`canonical_ids` turns the other ID types into it) and
    `stage_time` timestamp[us, UTC] (`utc_times`).
    """
    n = len(event_id)
    # A place repeats on every row (a table, a topic, a file): dictionary-encoded it
    # costs 4 bytes a row instead of the whole path, and nothing when it is one place.
    if isinstance(location, str):
        places = _repeated(
            pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(_CONSTANT_CHUNK, np.int32)), pa.array([location], pa.string())
            ),
            n,
        )
    else:
        places = pc.dictionary_encode(pc.cast(location, pa.string()))
    columns = [
        pc.cast(event_id, pa.string()),
        pc.cast(stage_time, UTC_US),
        places,
        partition if partition is not None else _repeated(_NULL_PARTITIONS, n),
        offset if offset is not None else _repeated(_NULL_OFFSETS, n),
    ]
    return pa.Table.from_arrays(columns, schema=LEDGER_SCHEMA)


# Columns with one value on every row (no partition and offset outside Kafka, one
# place) are one small array repeated as the chunks of a column, not n rows of
# buffers of nulls. Arrow and DuckDB read the chunks zero-copy.
_CONSTANT_CHUNK = 1 << 16
_NULL_PARTITIONS = pa.nulls(_CONSTANT_CHUNK, pa.int32())
_NULL_OFFSETS = pa.nulls(_CONSTANT_CHUNK, pa.int64())


def _repeated(chunk: pa.Array, n: int) -> pa.ChunkedArray:
    """`n` rows of `chunk`'s values, repeated from its start; its buffers are shared."""
    full, rest = divmod(n, len(chunk))
    return pa.chunked_array([chunk] * full + [chunk.slice(0, rest)], chunk.type)


def _chunked(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """`values` as a chunked array, its dictionary (if any) decoded."""
    if isinstance(values, pa.Array):
        values = pa.chunked_array([values], values.type)
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    return values


def _type_name(typ: pa.DataType) -> str:
    """A column type as the error names it: an extension type by its name (arrow.uuid)."""
    if isinstance(typ, pa.BaseExtensionType):
        return str(getattr(typ, "type_name", None) or typ.extension_name)
    return str(typ)


# ---------------------------------------------------------------- times

UTC_US = pa.timestamp("us", tz="UTC")
# The instants a datetime holds (years 1 to 9999): a value outside them is no time.
_MIN_US = epoch_us(datetime(1, 1, 1, tzinfo=UTC))
_MAX_US = epoch_us(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
# Microseconds per unit; a nanosecond value is floored to its microsecond.
_US_PER = {"s": 1_000_000, "ms": 1_000, "us": 1}
_INT64_MAX = (1 << 63) - 1

TimeKind = Literal["instant", "wall", "epoch", "text"]


def time_kind(
    typ: pa.DataType,
    column: str,
    where: str,
    time_unit: str | None,
    type_name: str | None = None,
) -> TimeKind:
    """How a time column of type `typ` is read; a SourceError when it cannot be.

    instant: a timestamp with a time zone; wall: one without (wall times in the
    source's `timezone`); epoch: an integer in `time_unit`; text: ISO 8601 (or
    digits only with `time_unit`), as text or UTF-8 binary.
    """
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    named = type_name or _type_name(typ)
    if isinstance(typ, pa.BaseExtensionType):
        pass  # uuid, json, a database's opaque types: no time
    elif pa.types.is_timestamp(typ):
        return "instant" if typ.tz is not None else "wall"
    elif pa.types.is_integer(typ):
        if time_unit is None:
            raise SourceError(
                f"{where}: time column {column!r} is {named}: an integer time is an epoch; "
                "set time_unit (s, ms, us or ns) to read it"
            )
        return "epoch"
    elif _TEXT.match(str(typ)) or pa.types.is_fixed_size_binary(typ) or pa.types.is_null(typ):
        return "text"  # (a column of nothing but nulls has the null type: no time in it)
    raise SourceError(
        f"{where}: time column {column!r} is {named}: it must be a timestamp, an integer "
        "epoch (with time_unit) or ISO 8601 text"
    )


def utc_times(
    values: pa.Array | pa.ChunkedArray,
    column: str,
    where: str,
    timezone: str = "UTC",
    time_unit: str | None = None,
    type_name: str | None = None,
) -> tuple[pa.ChunkedArray, pa.ChunkedArray | None]:
    """A time column as timestamp[us, UTC], and which rows hold a value that is no time.

    The one rule of every source kind with a time column (see `time_kind`):

    - a timestamp with a time zone is that instant;
    - a timestamp without one is a wall time in `timezone` (`TimedSource` says what a
      repeated or skipped wall time is);
    - an integer is an epoch in `time_unit`;
    - text is ISO 8601: an offset or zone in the text wins, else it is a wall time in
      `timezone`; text of digits only is an epoch in `time_unit` when that is set
      (and no time when it is not); binary is such text when it is UTF-8.

    Nanoseconds are floored to the microsecond. A null stays null. A value that
    is no time (text that does not parse, an instant outside the years 1-9999) is
    null in the result and true in the mask, which is None when there is none.
    Any other type is a SourceError naming `where`, `column` and the type.
    """
    values = _chunked(values)
    kind = time_kind(values.type, column, where, time_unit, type_name)
    if kind == "text":
        times = _text_times(values, timezone, time_unit)
    elif kind == "epoch":
        times = _epoch_times(values, time_unit or "s")
    else:
        times = _epoch_times(values.cast(pa.int64()), values.type.unit)
        if kind == "wall":
            times = _wall_times(times, timezone)
    unparsed = pc.and_(pc.is_valid(values), pc.is_null(times))
    return times, (unparsed if pc.any(unparsed).as_py() else None)


def in_window(times: pa.Array | pa.ChunkedArray, window: Window) -> pa.ChunkedArray:
    """Per row: whether its time is in `window`'s [start, end); a null time is not."""
    start, end = pa.scalar(window.start, UTC_US), pa.scalar(window.end, UTC_US)
    inside = pc.and_(pc.greater_equal(times, start), pc.less(times, end))
    return _chunked(pc.fill_null(inside, False))


def _epoch_times(values: pa.ChunkedArray, unit: str) -> pa.ChunkedArray:
    """Integers counted from the epoch in `unit`, as instants; null outside the years 1-9999."""
    values = values.cast(pa.int64()) if values.type != pa.uint64() else values
    limits = pc.min_max(values).as_py()
    lo, hi = limits["min"], limits["max"]
    per = _US_PER.get(unit)
    if lo is None:  # no rows, or only nulls
        return pa.chunked_array([pa.nulls(len(values), UTC_US)], UTC_US)
    if per is not None and -(-_MIN_US // per) <= lo and hi <= _MAX_US // per:
        us = pc.multiply(values.cast(pa.int64()), per) if per != 1 else values.cast(pa.int64())
        return us.cast(UTC_US)
    if per is None and lo >= 0 and hi <= _INT64_MAX:  # ns after the epoch: division floors
        return pc.divide(values.cast(pa.int64()), 1000).cast(UTC_US)
    # Some value is out of range (or a ns value before the epoch): row by row in numpy.
    chunks = []
    for chunk in values.chunks:
        valid = np.asarray(chunk.is_valid())
        if chunk.type == pa.uint64():
            big = np.asarray(pc.greater(chunk, pa.scalar(_INT64_MAX, pa.uint64())).fill_null(False))
            valid = valid & ~big
            chunk = pc.if_else(big, pa.scalar(0, pa.uint64()), chunk)
        raw = np.asarray(chunk.cast(pa.int64()).fill_null(0))
        if per is None:
            us = raw // 1000
        else:
            valid = valid & (raw >= -(-_MIN_US // per)) & (raw <= _MAX_US // per)
            us = np.where(valid, raw, 0) * per
        valid = valid & (us >= _MIN_US) & (us <= _MAX_US)
        chunks.append(pa.array(us, pa.int64(), mask=~valid).cast(UTC_US))
    return pa.chunked_array(chunks, UTC_US)


def _in_range(times: pa.ChunkedArray) -> pa.ChunkedArray:
    """`times` with the instants outside the years 1-9999 made null."""
    limits = pc.min_max(times.cast(pa.int64())).as_py()
    if limits["min"] is None or (limits["min"] >= _MIN_US and limits["max"] <= _MAX_US):
        return times
    us = times.cast(pa.int64())
    inside = pc.and_(pc.greater_equal(us, _MIN_US), pc.less_equal(us, _MAX_US))
    return pc.if_else(inside, times, pa.scalar(None, UTC_US))


def _wall_times(walls: pa.ChunkedArray, timezone: str) -> pa.ChunkedArray:
    """Wall times in `timezone` (given as UTC instants of the same digits) as instants.

    A repeated wall time is its first occurrence, a skipped one the instant of the
    jump: the reading is monotonic, so a range of instants is a range of wall times
    (`wall_bound`).
    """
    if timezone == "UTC":
        return walls
    naive = walls.cast(pa.timestamp("us"))
    local = pc.assume_timezone(naive, timezone, ambiguous="earliest", nonexistent="latest")
    return _in_range(local.cast(UTC_US))


# ISO 8601 starts with its year: "epoch", "infinity" or "now" (which DuckDB reads) are no time.
_TIME_TEXT = r"^\s*[0-9]"
_EPOCH_TEXT = r"^-?[0-9]+$"


def _text_times(values: pa.ChunkedArray, timezone: str, time_unit: str | None) -> pa.ChunkedArray:
    """ISO 8601 text (or UTF-8 binary) as instants; digits only, an epoch in `time_unit`."""
    import duckdb  # here: `recon check` (counts only) and most reads never need it

    text, _ = _utf8(values) if not _STRING.match(str(values.type)) else (values, None)
    con = duckdb.connect()
    con.register("v", pa.table({"s": text.cast(pa.string())}))

    def instants(zone: str) -> pa.ChunkedArray:
        # Text without an offset is read in the session's zone; we set it (a constant).
        con.execute(f"SET TimeZone = '{zone}'")
        return con.sql(
            "SELECT CASE WHEN regexp_matches(s, $time) AND NOT regexp_matches(s, $epoch) "
            "THEN TRY_CAST(s AS TIMESTAMPTZ) END AS t FROM v",
            params={"time": _TIME_TEXT, "epoch": _EPOCH_TEXT},
        ).to_arrow_table()["t"]

    times = _in_range(instants("UTC").cast(UTC_US))
    if timezone != "UTC":
        # Text with an offset or zone reads the same in any session zone; text without
        # one moves with it. Such text is a wall time, read as `_wall_times` reads them.
        shifted = _in_range(instants("Etc/GMT-1").cast(UTC_US))
        explicit = pc.fill_null(pc.equal(times, shifted), False)
        times = pc.if_else(explicit, times, _wall_times(times, timezone))
    if time_unit is not None:
        digits = con.sql(
            "SELECT CASE WHEN regexp_matches(s, $epoch) THEN TRY_CAST(s AS BIGINT) END AS n FROM v",
            params={"epoch": _EPOCH_TEXT},
        ).to_arrow_table()["n"]
        if digits.null_count < len(digits):
            times = pc.if_else(pc.is_valid(digits), _epoch_times(digits, time_unit), times)
    return pa.chunked_array(_as_chunks(times), UTC_US)


def _as_chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return values.chunks if isinstance(values, pa.ChunkedArray) else [values]


def unit_bound(us: int, unit: str) -> int:
    """The least value in `unit` whose instant (as `utc_times` reads it) is >= `us` µs.

    So `v >= unit_bound(a)` and `v < unit_bound(b)` select exactly the values read
    as instants in [a, b): a filter on the column's own encoding.
    """
    per = _US_PER.get(unit)
    return us * 1000 if per is None else -(-us // per)


def wall_bound(instant: datetime, timezone: str) -> datetime:
    """The least wall time in `timezone` read (by `utc_times`) as `instant` or later (naive).

    Wall times are read monotonically, so `wall >= wall_bound(a)` and
    `wall < wall_bound(b)` select exactly the rows read as instants in [a, b),
    even around a change of the clocks: a filter on a naive column in place.
    """
    target = epoch_us(instant)
    if timezone == "UTC":
        return _naive(target)

    def reached(walls: list[int]) -> list[bool]:
        """Per wall time (µs, its digits as if UTC): whether it is read as `target` or later."""
        read = _wall_times(pa.chunked_array([pa.array(walls, pa.int64()).cast(UTC_US)]), timezone)
        return [t is not None and t >= target for t in read.cast(pa.int64()).to_pylist()]

    guess = epoch_us(instant.astimezone(ZoneInfo(timezone)).replace(tzinfo=UTC))
    # Nearly always the wall time of the instant itself; around a change of the clocks
    # (a skipped or a repeated hour) the least one is found by bisection.
    if reached([guess - 1, guess]) == [False, True]:
        return _naive(guess)
    lo, hi = guess - 2 * _DAY_US, guess + 2 * _DAY_US  # not reached at lo, reached at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if reached([mid])[0] else (mid, hi)
    return _naive(hi)


_DAY_US = 86_400_000_000


def _naive(us: int) -> datetime:
    """A naive datetime of `us` µs after 1970-01-01 00:00."""
    return datetime(1970, 1, 1) + timedelta(microseconds=us)


# ---------------------------------------------------------------- IDs

IdKind = Literal["text", "binary", "integer", "uuid"]


def id_kind(typ: pa.DataType, column: str, where: str, type_name: str | None = None) -> IdKind:
    """How an ID column of type `typ` is read (`canonical_ids`); a SourceError if it cannot be."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if isinstance(typ, pa.BaseExtensionType):
        if typ.extension_name == "arrow.uuid":
            return "uuid"
    elif _STRING.match(str(typ)) or pa.types.is_null(typ):
        return "text"  # (a column of nothing but nulls has the null type: no usable ID)
    elif pa.types.is_fixed_size_binary(typ):
        return "uuid" if typ.byte_width == 16 else "binary"
    elif _TEXT.match(str(typ)):
        return "binary"
    elif pa.types.is_integer(typ):
        return "integer"
    raise SourceError(
        f"{where}: ID column {column!r} is {type_name or _type_name(typ)}: it must be text, "
        "uuid, an integer or binary (UTF-8)"
    )


def id_class(kind: IdKind) -> str:
    """What `canonical_ids` makes of a kind: text (text, or UTF-8 binary), integer, uuid."""
    return "text" if kind == "binary" else kind


def canonical_ids(
    values: pa.Array | pa.ChunkedArray,
    column: str,
    where: str,
    null: str | None = None,
    empty: str | None = None,
    type_name: str | None = None,
) -> tuple[pa.ChunkedArray, pa.ChunkedArray | None]:
    """An ID column in the one text form of every source, and why each unusable ID is unusable.

    Text as is; a uuid (PostgreSQL uuid, Arrow's uuid type, fixed_size_binary(16))
    lowercase and hyphenated; an integer in decimal; binary decoded as UTF-8. An ID
    is unusable when it is null (reason `null`, default "<column> is null"), empty
    (`empty`, "<column> is empty"), binary that is not UTF-8 ("<column> is not
    valid UTF-8") or text holding U+0000 (no store keeps it): null in the IDs, its
    reason in the second array (None when every
    ID is usable). Any other type is a SourceError naming `where`, `column` and the type.
    """
    values = _chunked(values)
    kind = id_kind(values.type, column, where, type_name)
    not_utf8 = None
    if kind in ("text", "integer"):
        ids = values.cast(pa.string())
    elif kind == "uuid":
        ids = _uuid_text(values)
    else:
        ids, not_utf8 = _utf8(values)
    reasons = [(pc.is_null(values), null or f"{column} is null")]
    if not_utf8 is not None:
        reasons.append((not_utf8, f"{column} is not valid UTF-8"))
    if kind in ("text", "binary"):
        reasons.append(
            (pc.fill_null(pc.equal(pc.binary_length(ids), 0), False), empty or f"{column} is empty")
        )
        # PostgreSQL's text cannot hold U+0000: such an ID could not be stored, and its
        # whole window with it. Named, like any ID recon cannot use.
        nul = nul_ids(ids)
        if nul is not None:
            reasons.append((nul, f"{column} holds a NUL"))
    unusable = functools.reduce(pc.or_, [mask for mask, _ in reasons])
    if not pc.any(unusable).as_py():
        return ids, None
    why = pa.nulls(len(ids), pa.string())
    for mask, reason in reversed(reasons):  # the first that applies
        why = pc.if_else(mask, pa.scalar(reason), why)
    return pc.if_else(unusable, pa.scalar(None, pa.string()), ids), why


def nul_ids(ids: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Per ID: whether it holds U+0000; None when none can (no zero byte in the text).

    One pass over the bytes finds most reads free of NUL, 35x faster than matching
    every value (bench/README.md); bytes outside the chunks' slices only make it match.
    """
    if all(_no_zero_byte(chunk) for chunk in ids.chunks):
        return None
    return pc.fill_null(pc.match_substring(ids, "\x00"), False)


def _no_zero_byte(chunk: pa.Array) -> bool:
    if chunk.type not in (pa.string(), pa.large_string()):
        return False
    data = chunk.buffers()[2]
    return data is None or data.size == 0 or int(np.frombuffer(data, np.uint8).min()) > 0


def _utf8(values: pa.ChunkedArray) -> tuple[pa.ChunkedArray, pa.ChunkedArray | None]:
    """Binary as text; a value that is not UTF-8 is null, and true in the mask (None if none)."""
    chunks, bad = [], []
    for chunk in values.chunks:
        if pa.types.is_fixed_size_binary(chunk.type):
            chunk = chunk.cast(pa.binary())
        text_type = pa.large_string() if pa.types.is_large_binary(chunk.type) else pa.string()
        try:
            chunks.append(chunk.cast(text_type).cast(pa.string()))
            bad.append(pa.array(np.zeros(len(chunk), bool)))
            continue
        except pa.ArrowInvalid:  # some value is not UTF-8: find which, below
            pass
        ok = _utf8_ok(chunk)
        chunks.append(
            pc.if_else(ok, chunk, pa.scalar(None, chunk.type)).cast(text_type).cast(pa.string())
        )
        bad.append(pc.invert(ok))
    text = pa.chunked_array(chunks, pa.string())
    mask = pa.chunked_array(bad, pa.bool_())
    return text, (mask if pc.any(mask).as_py() else None)


def _utf8_ok(chunk: pa.Array) -> pa.Array:
    """Per value: null or valid UTF-8 (DuckDB validates each value; Arrow only a whole array)."""
    import duckdb

    con = duckdb.connect()
    con.register("b", pa.table({"b": chunk.cast(pa.large_binary())}))
    result = con.sql("SELECT b IS NULL OR try(decode(b)) IS NOT NULL AS ok FROM b")
    return result.to_arrow_table()["ok"].combine_chunks()


# Each byte's two hex digits, as the uint16 whose little-endian bytes they are.
_HEX_PAIRS = np.frombuffer(b"".join(f"{b:02x}".encode() for b in range(256)), np.uint16).astype(
    np.uint16
)
# Where each of a UUID's 16 bytes' digit pairs go in its 36 characters (8-4-4-4-12).
_UUID_GROUPS = ((0, 4, 0), (4, 6, 9), (6, 8, 14), (8, 10, 19), (10, 16, 24))
_UUID_SLICE = 1 << 20  # rows per text chunk: 36 MB, far inside a string array's 2 GB


def _uuid_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """16-byte UUIDs as lowercase hyphenated text (8-4-4-4-12), in numpy."""
    chunks = []
    for whole in values.chunks:
        storage = whole.storage if isinstance(whole, pa.ExtensionArray) else whole
        for start in range(0, len(storage), _UUID_SLICE):
            part = storage.slice(start, _UUID_SLICE)
            n = len(part)
            data = part.buffers()[1]
            raw = np.frombuffer(data, np.uint8, count=16 * (part.offset + n))[16 * part.offset :]
            digits = _HEX_PAIRS[raw.reshape(n, 16)].view(np.uint8)  # n x 32 characters
            text = np.full((n, 36), ord("-"), np.uint8)
            for first, stop, at in _UUID_GROUPS:
                text[:, at : at + 2 * (stop - first)] = digits[:, 2 * first : 2 * stop]
            offsets = np.arange(0, 36 * n + 1, 36, dtype=np.int32)
            buffers = [None, pa.py_buffer(offsets), pa.py_buffer(text)]
            chunk = pa.Array.from_buffers(pa.string(), n, buffers)
            if part.null_count:
                chunk = pc.if_else(pc.is_valid(part), chunk, pa.scalar(None, pa.string()))
            chunks.append(chunk)
    return pa.chunked_array(chunks, pa.string())


# string, large_string, string_view (utf8 in Arrow's older names)
_STRING = re.compile(r"^(large_)?(string|utf8)(_view)?$")
# the same and binary, large_binary, binary_view
_TEXT = re.compile(r"^(large_)?(string|utf8|binary)(_view)?$")


def usable_rows(
    ids: pa.Array | pa.ChunkedArray,
    times: pa.Array | pa.ChunkedArray,
    where: str,
    column: str,
    null: str = "null",
    type_name: str | None = None,
) -> tuple[pa.ChunkedArray, pa.ChunkedArray | None, list[BadRecord]]:
    """The IDs in their text form (`canonical_ids`), and which rows have a usable one.

    The mask is None when every row does; each other row is a BadRecord, named by
    `where` and its time, with why.
    """
    text, why = canonical_ids(ids, column, where, null=f"{column} is {null}", type_name=type_name)
    if why is None:
        return text, None, []
    rejected = pc.is_valid(why)
    bad = [
        BadRecord(f"{where} row at {iso(t)}" if t else f"{where} row", reason, time=t)
        for t, reason in zip(
            _chunked(times).filter(rejected).to_pylist(),
            why.filter(rejected).to_pylist(),
            strict=True,
        )
    ]
    return text, pc.invert(rejected), bad


def shown(value: object) -> str:
    """A raw value as a reason quotes it: text in quotes, bytes decoded (bad ones escaped)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    return repr(value)
