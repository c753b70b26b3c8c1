"""Avro values in Confluent wire format: schemas by ID from a registry, fields read columnar.

A value is a magic byte 0, a 4-byte big-endian schema ID, then the Avro binary
body of a record written with that schema. Schemas are immutable by ID, so each
is fetched once (`GET {url}/schemas/ids/{id}`, never "latest") and kept for the
life of the source's config, i.e. one run.

The decoder is columnar: all the values written with one schema are walked
together, one schema node at a time, with numpy (a varint is read for every
row at once, a string is skipped by adding its length to every row's
position). Per-message decoding with fastavro's schemaless_reader reads
~120 k messages/s on a 2-core machine, and this ~600 k (ID and time of an
8-field value with a nested record, an array and a map; bench/avro_ids.py).
Every value is walked to its end, so a body that does not fit its schema
(truncated, trailing bytes, a union or enum index out of range, a negative
length, a varint over 10 bytes) is found even past the fields read.
Text of other fields is not checked to be UTF-8.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, PrivateAttr, model_validator

from recon.errors import SourceError
from recon.sources.base import Strict

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_FIXED_SIZE = {"null": 0, "boolean": 1, "float": 4, "double": 8}
_HEADER = 5  # magic byte + schema ID


class RegistryConfig(Strict):
    """`schema_registry:` of a Kafka source: a Confluent-compatible API and its credentials."""

    url: str = Field(min_length=1)
    username: str | None = None
    password: str | None = None
    # "user:password" in one value (what Confluent clients call basic.auth.user.info).
    basic_auth: str | None = None
    timeout_s: float = Field(default=10, gt=0, le=600)
    # Parsed schemas by ID: schemas never change under an ID, so a run fetches each once.
    _schemas: dict[int, Schema] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _one_credential(self) -> RegistryConfig:
        if self.basic_auth is not None and self.username is not None:
            raise ValueError("give username/password or basic_auth, not both")
        if self.basic_auth is not None and ":" not in self.basic_auth:
            raise ValueError("basic_auth must be 'user:password'")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


@dataclass(frozen=True)
class Schema:
    """One registered Avro schema, parsed, with its named types for resolving references."""

    schema_id: int
    root: Any
    named: dict[str, Any]


def _auth_header(cfg: RegistryConfig) -> dict[str, str]:
    user_info = cfg.basic_auth or (f"{cfg.username}:{cfg.password}" if cfg.username else None)
    if user_info is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(user_info.encode()).decode()}


def _get(cfg: RegistryConfig, path: str) -> tuple[int, Any]:
    """(status, JSON body) of a GET; an unreachable registry is a SourceError."""
    url = cfg.url.rstrip("/") + path
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", **_auth_header(cfg)}
    )
    try:
        with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"message": body[:200].decode("utf-8", "replace")}
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"schema registry {cfg.url} unreachable: {reason}") from exc


def check(cfg: RegistryConfig) -> None:
    """Fail fast: the registry answers (and takes the credentials), or SourceError."""
    status, body = _get(cfg, "/config")
    if status != 200:
        raise SourceError(f"schema registry {cfg.url}: HTTP {status} on /config: {body}")


def fetch(cfg: RegistryConfig, schema_id: int) -> Schema | str:
    """The schema registered under `schema_id`, else why it cannot be used (a bad record's reason).

    Unknown IDs are not remembered: one may be registered later in the run.
    Any other answer but 200 (auth, server errors, a URL that is not the API)
    is a SourceError: the registry, not the message, is at fault.
    """
    cached = cfg._schemas.get(schema_id)
    if cached is not None:
        return cached
    status, body = _get(cfg, f"/schemas/ids/{schema_id}")
    # 40403 is "schema not found"; a bare 404 is a wrong URL, which must not turn every
    # message into an unreadable one.
    if status == 404 and isinstance(body, dict) and body.get("error_code") == 40403:
        return f"schema id {schema_id} unknown to the registry"
    if status != 200:
        raise SourceError(
            f"schema registry {cfg.url}: HTTP {status} fetching schema id {schema_id}: {body}"
        )
    kind = body.get("schemaType", "AVRO")  # absent means Avro in the Confluent API
    if kind != "AVRO":
        return f"schema id {schema_id} is a {kind} schema, not Avro"
    named: dict[str, Any] = {}
    try:
        for ref in body.get("references") or ():
            fastavro.parse_schema(_referenced(cfg, ref), named_schemas=named)
        root = fastavro.parse_schema(json.loads(body["schema"]), named_schemas=named)
    except (ValueError, KeyError, TypeError, fastavro.schema.SchemaParseException) as exc:
        return f"schema id {schema_id} does not parse: {exc}"
    schema = Schema(schema_id, root, named)
    cfg._schemas[schema_id] = schema
    return schema


def _referenced(cfg: RegistryConfig, ref: dict[str, Any]) -> Any:
    status, body = _get(cfg, f"/subjects/{ref['subject']}/versions/{ref['version']}")
    if status != 200:
        raise ValueError(f"reference {ref['subject']} v{ref['version']}: HTTP {status}")
    return json.loads(body["schema"])


# ---- columnar decoding -------------------------------------------------------------------

# Per-row outcome codes beside the schema's own reasons (`_Walk.reasons`).
_OK = 0

# What a captured field holds, per row.
_NONE, _TEXT, _NUMBER, _MILLIS, _MICROS = range(5)


class _Slot:
    """Where one wanted field (ID or time) was found in each row."""

    def __init__(self, name: str, n: int) -> None:
        self.name = name
        self.kind = np.zeros(n, np.int8)
        self.start = np.zeros(n, np.int64)
        self.value = np.zeros(n, np.int64)  # a text's length, or the number


class _Walk:
    """Values of one schema walked together: each row's position, end and first failure."""

    def __init__(self, data: np.ndarray, start: np.ndarray, end: np.ndarray, prefix: str) -> None:
        self.data, self.pos, self.end = data, start.copy(), end
        self.fail = np.zeros(len(start), np.int32)
        self.reasons = ["ok"]
        self.prefix = prefix
        self._codes: dict[str, int] = {}
        self.last = len(data) - 1

    def flag(self, rows: np.ndarray, reason: str) -> None:
        """Rows fail with `reason`, unless they failed before (the first cause is the one)."""
        if not rows.size:
            return
        code = self._codes.get(reason)
        if code is None:
            code = self._codes[reason] = len(self.reasons)
            self.reasons.append(self.prefix + reason)
        fresh = rows[self.fail[rows] == _OK]
        self.fail[fresh] = code

    def advance(self, rows: np.ndarray, size: Any) -> None:
        pos = self.pos[rows] + size
        over = pos > self.end[rows]
        if over.any():
            self.flag(rows[over], "value does not decode with its schema (truncated)")
            pos = np.minimum(pos, self.end[rows])  # keep every read inside the buffer
        self.pos[rows] = pos

    def varint(self, rows: np.ndarray) -> np.ndarray:
        """The zigzag varint (int, long, lengths, indices) at each row's position; past it."""
        p = self.pos[rows]
        out = np.zeros(len(rows), np.uint64)
        live = np.arange(len(rows))
        for k in range(10):
            at = p[live]
            byte = self.data[np.minimum(at, self.last)].astype(np.uint64)
            out[live] |= (byte & np.uint64(0x7F)) << np.uint64(7 * k)
            p[live] = at + 1
            live = live[(byte & np.uint64(0x80)) != 0]
            if not live.size:
                break
        else:
            self.flag(rows[live], "value does not decode with its schema (varint over 10 bytes)")
        over = p > self.end[rows]
        if over.any():
            self.flag(rows[over], "value does not decode with its schema (truncated)")
            p = np.minimum(p, self.end[rows])
        self.pos[rows] = p
        v = out.view(np.int64)
        return (v >> 1) ^ -(v & 1)


def _type_of(node: Any, named: dict[str, Any]) -> Any:
    """A schema node with named references resolved."""
    while isinstance(node, str) and node not in _PRIMITIVES:
        node = named[node]
    return node


def _name(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    name: str = node.get("logicalType") or node["type"]
    return name


def _skip(w: _Walk, node: Any, named: dict[str, Any], rows: np.ndarray) -> None:
    """Move each row past a value of `node`."""
    node = _type_of(node, named)
    if not rows.size:
        return
    if isinstance(node, list):
        for branch, sub in _branches(w, node, rows):
            _skip(w, branch, named, sub)
        return
    kind = node if isinstance(node, str) else node["type"]
    if kind in _FIXED_SIZE:
        w.advance(rows, _FIXED_SIZE[kind])
    elif kind in ("int", "long"):
        w.varint(rows)
    elif kind in ("string", "bytes"):
        _skip_bytes(w, rows)
    elif kind == "fixed":
        w.advance(rows, node["size"])
    elif kind == "enum":
        index = w.varint(rows)
        w.flag(
            rows[(index < 0) | (index >= len(node["symbols"]))],
            "value does not decode with its schema (enum index out of range)",
        )
    elif kind == "record":
        for f in node["fields"]:
            _skip(w, f["type"], named, rows)
    elif kind in ("array", "map"):
        _skip_blocks(w, node, named, rows)
    else:
        _skip(w, kind, named, rows)  # {"type": "string"} and the like


def _skip_bytes(w: _Walk, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skip a length-prefixed value; returns where its bytes start and how many are there."""
    size = w.varint(rows)
    negative = size < 0
    if negative.any():
        w.flag(rows[negative], "value does not decode with its schema (negative length)")
        size = np.maximum(size, 0)
    start = w.pos[rows]
    w.advance(rows, size)
    # A text cut short by the value's end is never read whole: its row has failed.
    return start, w.pos[rows] - start


def _skip_blocks(w: _Walk, node: Any, named: dict[str, Any], rows: np.ndarray) -> None:
    """Arrays and maps: blocks of items until a count of 0, item by item across rows."""
    live = rows
    while live.size:
        count = w.varint(live)
        sized = count < 0  # a negative count is followed by the block's size in bytes
        if sized.any():
            w.advance(live[sized], np.maximum(w.varint(live[sized]), 0))
            count = np.where(sized, 0, count)  # skipped whole
            live_more = live[sized]
        else:
            live_more = live[:0]
        for j in range(int(count.max(initial=0))):
            sub = live[count > j]
            if node["type"] == "map":
                _skip_bytes(w, sub)
            _skip(w, node["items"] if node["type"] == "array" else node["values"], named, sub)
        # Rows whose block was not empty read another count; a failed row stops.
        more = np.concatenate([live[count > 0], live_more])
        live = more[(w.fail[more] == _OK) & (w.pos[more] < w.end[more])]


def _branches(w: _Walk, union: list[Any], rows: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """Split rows by the union branch their value takes."""
    index = w.varint(rows)
    w.flag(
        rows[(index < 0) | (index >= len(union))],
        "value does not decode with its schema (union index out of range)",
    )
    return [(branch, rows[index == b]) for b, branch in enumerate(union)]


def _walk(
    w: _Walk,
    node: Any,
    named: dict[str, Any],
    rows: np.ndarray,
    wants: list[tuple[_Slot, tuple[str, ...]]],
) -> None:
    """Skip a value of `node`, recording where the wanted fields (path rests) are."""
    node = _type_of(node, named)
    if not rows.size:
        return
    if isinstance(node, list):
        for branch, sub in _branches(w, node, rows):
            _walk(w, branch, named, sub, wants)
        return
    if not isinstance(node, dict) or node.get("type") != "record":
        for slot, _ in wants:
            what = "is null" if node == "null" else f"is in a {_name(node)}, not a record"
            w.flag(rows, f"field {slot.name} {what}")
        _skip(w, node, named, rows)
        return
    for f in node["fields"]:
        here = [(slot, rest[1:]) for slot, rest in wants if rest[0] == f["name"]]
        deeper = [(slot, rest) for slot, rest in here if rest]
        if deeper:
            _walk(w, f["type"], named, rows, deeper)
        elif here:
            _capture(w, f["type"], named, rows, [slot for slot, _ in here])
        else:
            _skip(w, f["type"], named, rows)
    for slot, rest in wants:
        if rest[0] not in {f["name"] for f in node["fields"]}:
            w.flag(rows, f"field {slot.name} absent from record {node['name']}")


def _capture(
    w: _Walk, node: Any, named: dict[str, Any], rows: np.ndarray, slots: list[_Slot]
) -> None:
    """Read a wanted field: text (string, uuid, bytes) or number (int, long, timestamps)."""
    node = _type_of(node, named)
    if not rows.size:
        return
    if isinstance(node, list):
        for branch, sub in _branches(w, node, rows):
            _capture(w, branch, named, sub, slots)
        return
    kind = node if isinstance(node, str) else node["type"]
    # The schema's JSON: a logical type's name, or anything a broken schema holds.
    logical: Any = None if isinstance(node, str) else node.get("logicalType")
    if kind in ("string", "bytes"):
        start, size = _skip_bytes(w, rows)
        for slot in slots:
            slot.kind[rows], slot.start[rows], slot.value[rows] = _TEXT, start, size
        return
    if kind in ("int", "long"):
        value = w.varint(rows)
        code = {"timestamp-millis": _MILLIS, "timestamp-micros": _MICROS}.get(logical, _NUMBER)
        for slot in slots:
            slot.kind[rows], slot.value[rows] = code, value
        return
    if kind == "null":
        for slot in slots:
            w.flag(rows, f"field {slot.name} is null")
        return
    for slot in slots:
        w.flag(rows, f"field {slot.name} is a {_name(node)}")
    _skip(w, node, named, rows)


def has_path(schema: Schema, path: tuple[str, ...]) -> bool:
    """Whether some branch of the schema holds the field path (else no value of it can)."""
    node = _type_of(schema.root, schema.named)
    if not path:
        return True
    if isinstance(node, list):
        return any(has_path(Schema(schema.schema_id, b, schema.named), path) for b in node)
    if not isinstance(node, dict) or node.get("type") != "record":
        return False
    for f in node["fields"]:
        if f["name"] == path[0]:
            return has_path(Schema(schema.schema_id, f["type"], schema.named), path[1:])
    return False


@dataclass
class Decoded:
    """Per value: its schema ID (-1: no Confluent header), ID, time, and why it is unusable."""

    schema_id: np.ndarray  # int64
    ids: pa.Array  # string; null where the value failed
    times: pa.Array | None  # timestamp[us, UTC] when a time path was asked for
    reason: pa.Array  # string; null where the value is usable


def decode(
    raw: pa.ChunkedArray | pa.Array,
    schema_of: Callable[[int], Schema | str],
    id_path: str,
    time_path: str | None = None,
) -> Decoded:
    """Read the event ID (and time) at dotted field paths of Confluent-framed Avro values.

    `schema_of(id)` returns a `Schema` or why there is none. The ID is a string
    (uuid included), bytes of UTF-8, an int or a long, non-empty; the time a long
    with logicalType timestamp-millis or timestamp-micros. Each value without
    them gets a reason naming its schema ID.
    """
    arr = _large_binary(raw)
    n = len(arr)
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], np.int64)[arr.offset : arr.offset + n + 1]
    body = np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    # Padding: the varint of a truncated last value may look up to 10 bytes past it.
    data = np.concatenate([body[: offsets[-1]], np.zeros(16, np.uint8)])
    start, end = offsets[:-1], offsets[1:]
    reasons = np.full(n, None, object)
    schema_id = _headers(arr, data, start, end, reasons)
    slots = {"id": _Slot(id_path, n)}
    if time_path:
        slots["time"] = _Slot(time_path, n)
    for sid in np.unique(schema_id[schema_id >= 0]).tolist():
        rows = np.flatnonzero(schema_id == sid)
        _decode_group(
            _Walk(data, start[rows] + _HEADER, end[rows], f"schema id {sid}: "),
            rows,
            schema_of(sid),
            slots,
            reasons,
        )
    ids = _text_column(data, slots["id"], reasons, schema_id)
    times = _time_column(slots["time"], reasons) if time_path else None
    return Decoded(schema_id, ids, times, pa.array(reasons, pa.string()))


def _headers(
    arr: pa.Array, data: np.ndarray, start: np.ndarray, end: np.ndarray, reasons: np.ndarray
) -> np.ndarray:
    """Each value's schema ID from its wire header; -1 (and a reason) when it has none."""
    valid = np.asarray(arr.is_valid(), bool)
    reasons[~valid] = "no value"
    framed = valid & (end - start >= _HEADER)
    for i in np.flatnonzero(valid & ~framed):
        reasons[i] = f"value of {end[i] - start[i]} bytes is shorter than the 5-byte wire header"
    magic = data[np.where(framed, start, 0)]
    for i in np.flatnonzero(framed & (magic != 0)):
        reasons[i] = f"magic byte {magic[i]} is not 0: not Confluent wire format"
    framed &= magic == 0
    schema_id = np.full(len(start), -1, np.int64)
    header = data[start[framed, None] + np.arange(1, _HEADER)].astype(np.int64)
    schema_id[framed] = (header << np.array([24, 16, 8, 0])).sum(axis=1)
    return schema_id


def _large_binary(raw: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(raw, pa.ChunkedArray):
        raw = raw.combine_chunks() if raw.num_chunks else pa.array([], pa.binary())
    return raw.cast(pa.large_binary())


def _decode_group(
    w: _Walk,
    rows: np.ndarray,
    schema: Schema | str,
    slots: dict[str, _Slot],
    reasons: np.ndarray,
) -> None:
    """Walk the values written with one schema (the rows `rows` of the read)."""
    if isinstance(schema, str):
        reasons[rows] = schema
        return
    for slot in slots.values():
        if not has_path(schema, tuple(slot.name.split("."))):
            reasons[rows] = f"{w.prefix}field {slot.name} not in the schema"
            return
    local = {role: _Slot(slot.name, len(rows)) for role, slot in slots.items()}
    wants = [(slot, tuple(slot.name.split("."))) for slot in local.values()]
    _walk(w, schema.root, schema.named, np.arange(len(rows)), wants)
    w.flag(np.flatnonzero(w.end > w.pos), "value does not decode with its schema (trailing bytes)")
    ident = local["id"]
    w.flag(
        np.flatnonzero((ident.kind == _TEXT) & (ident.value == 0)), f"field {ident.name} is empty"
    )
    if "time" in local:
        when = local["time"]
        w.flag(
            np.flatnonzero((when.kind != _MILLIS) & (when.kind != _MICROS)),
            f"field {when.name} is not a timestamp-millis or timestamp-micros long",
        )
    for role, slot in local.items():
        target = slots[role]
        target.kind[rows], target.start[rows], target.value[rows] = (
            slot.kind,
            slot.start,
            slot.value,
        )
    failed = np.flatnonzero(w.fail)
    reasons[rows[failed]] = np.array(w.reasons, object)[w.fail[failed]]


def _failed(reasons: np.ndarray) -> np.ndarray:
    # numpy's stubs take no None operand; on an object array it compares elementwise.
    failed: np.ndarray = np.not_equal(reasons, None)  # type: ignore[call-overload]
    return failed


def _time_column(slot: _Slot, reasons: np.ndarray) -> pa.Array:
    us = np.where(slot.kind == _MILLIS, slot.value * 1000, slot.value)
    return pa.array(us, pa.timestamp("us", tz="UTC"), mask=_failed(reasons))


def _text_column(
    data: np.ndarray, slot: _Slot, reasons: np.ndarray, schema_id: np.ndarray
) -> pa.Array:
    """The ID column: text as it is, numbers in decimal; null where the row failed."""
    ok = ~_failed(reasons)
    is_text = ok & (slot.kind == _TEXT)
    text = _gather(data, np.where(is_text, slot.value, 0), slot.start)
    is_text &= _utf8(text, slot, reasons, schema_id)
    is_number = ok & (slot.kind == _NUMBER)
    chosen = text.cast(pa.large_string(), safe=False)
    if is_number.any():
        number = pa.array(slot.value, pa.int64()).cast(pa.large_string())
        chosen = pc.if_else(pa.array(is_number), number, chosen)
    valid = pa.array(is_number | is_text)
    return pc.if_else(valid, chosen, pa.scalar(None, pa.large_string())).cast(pa.string())


def _gather(data: np.ndarray, length: np.ndarray, start: np.ndarray) -> pa.Array:
    """The byte strings data[start:start+length] of every row, in one binary array.

    A batch of rows at a time: the index of every output byte is 8 bytes, so
    indexing a whole read at once held ~16x its IDs' bytes (bench/README.md).
    """
    offsets = np.zeros(len(length) + 1, np.int64)
    np.cumsum(length, out=offsets[1:])
    out = np.empty(int(offsets[-1]), data.dtype)
    for lo in range(0, len(length), _GATHER_ROWS):
        hi = min(lo + _GATHER_ROWS, len(length))
        first, last = int(offsets[lo]), int(offsets[hi])
        # Position of each output byte in `data`: its row's start, plus its index in the row.
        index = np.repeat(start[lo:hi] - offsets[lo:hi], length[lo:hi]) + np.arange(first, last)
        out[first:last] = data[index]
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(length), [None, pa.py_buffer(offsets), pa.py_buffer(out)]
    )


_GATHER_ROWS = 1 << 18


def _utf8(text: pa.Array, slot: _Slot, reasons: np.ndarray, schema_id: np.ndarray) -> np.ndarray:
    """Which texts are UTF-8; the others' rows fail (checked one by one only when one is not)."""
    try:
        text.cast(pa.large_string())
        return np.ones(len(text), bool)
    except pa.ArrowInvalid:
        pass
    good = np.ones(len(text), bool)
    for i, value in enumerate(text.to_pylist()):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            good[i] = False
            if reasons[i] is None:
                reasons[i] = f"schema id {schema_id[i]}: field {slot.name} is not valid UTF-8"
    return good
