"""The columnar Avro decoder (recon/sources/kafka/avro.py) against fastavro, without servers."""

from __future__ import annotations

import io
import random
import struct

import fastavro
import pyarrow as pa
import pytest

from recon.sources.kafka.avro import Schema, decode

NESTED = {
    "type": "record",
    "name": "E",
    "fields": [
        {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["A", "B", "C"]}},
        {"name": "tags", "type": {"type": "array", "items": ["null", "string"]}},
        {"name": "attrs", "type": {"type": "map", "values": {"type": "array", "items": "long"}}},
        {"name": "blob", "type": {"type": "fixed", "name": "F", "size": 3}},
        {
            "name": "payment",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "P",
                    "fields": [
                        {"name": "flag", "type": "boolean"},
                        {"name": "id", "type": ["null", "string", "long"]},
                        {"name": "f", "type": "float"},
                    ],
                },
            ],
        },
        {"name": "again", "type": ["null", "P"]},  # a named reference
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    ],
}


def _schema(definition: dict, sid: int = 5) -> Schema:
    named: dict = {}
    return Schema(sid, fastavro.parse_schema(definition, named_schemas=named), named)


def _framed(record: dict, definition: dict = NESTED, sid: int = 5) -> bytes:
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, sid))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(definition), record)
    return buf.getvalue()


def _record(rng: random.Random, i: int) -> dict:
    payment = {"flag": bool(i % 2), "id": [f"id-{i}", i * 1_000_003, f"é{i}"][i % 3], "f": 1.5}
    return {
        "kind": "ABC"[i % 3],
        "tags": [rng.choice([None, "x" * rng.randint(0, 200)]) for _ in range(rng.randint(0, 4))],
        "attrs": {f"k{j}": list(range(rng.randint(0, 70))) for j in range(rng.randint(0, 3))},
        "blob": b"abc",
        "payment": payment,
        "again": payment if i % 2 else None,
        "at": 1_780_000_000_000_000 + i,
    }


def test_matches_fastavro_on_every_type() -> None:
    rng = random.Random(7)
    records = [_record(rng, i) for i in range(600)]
    # Big arrays and maps are written in several blocks: the decoder must follow them.
    result = decode(
        pa.array([_framed(r) for r in records]), lambda _: _schema(NESTED), "payment.id", "at"
    )
    assert result.reason.null_count == len(records), result.reason.drop_null()[:3]
    assert result.ids.to_pylist() == [str(r["payment"]["id"]) for r in records]
    assert [t.timestamp() * 1e6 for t in result.times.to_pylist()] == pytest.approx(
        [r["at"] for r in records]
    )
    assert set(result.schema_id.tolist()) == {5}


def _reasons(values: list[bytes | None], path: str = "payment.id") -> list[str | None]:
    def schema_of(sid: int) -> Schema | str:
        return _schema(NESTED, sid) if sid == 5 else f"schema id {sid} unknown to the registry"

    return decode(pa.array(values, pa.binary()), schema_of, path).reason.to_pylist()


def test_each_bad_value_named() -> None:
    rng = random.Random(1)
    good = _framed(_record(rng, 0))
    null_id = _framed({**_record(rng, 3), "payment": {"flag": True, "id": None, "f": 0.0}})
    no_payment = _framed({**_record(rng, 4), "payment": None})
    empty = _framed({**_record(rng, 5), "payment": {"flag": True, "id": "", "f": 0.0}})
    bad_union = bytearray(_framed({**_record(rng, 6), "tags": [], "attrs": {}}))
    bad_union[5 + 1 + 1 + 1 + 3] = 0x08  # kind, tags end, attrs end, blob; then union index 4
    bad_enum = b"\x00\x00\x00\x00\x05" + b"\x0a" + good[6:]  # enum index 5 of 3 symbols
    long_varint = b"\x00\x00\x00\x00\x05" + b"\xff" * 11
    negative = _framed({**_record(rng, 7), "payment": {"flag": True, "id": "abc", "f": 0.0}})
    negative = negative.replace(b"\x06abc", b"\x05abc")  # string length -3
    not_utf8 = _framed({**_record(rng, 8), "payment": {"flag": True, "id": "é", "f": 0.0}})
    not_utf8 = not_utf8.replace("é".encode(), b"\xc3\x28")
    reasons = _reasons(
        [
            good,
            None,
            b"\x00\x00\x01",
            b"\x01\x00\x00\x00\x05" + good[5:],
            b"\x00\x00\x00\x00\x06" + good[5:],
            null_id,
            no_payment,
            empty,
            bytes(bad_union),
            bad_enum,
            long_varint,
            negative,
            not_utf8,
        ]
    )
    prefix = "schema id 5: "
    assert reasons == [
        None,
        "no value",
        "value of 3 bytes is shorter than the 5-byte wire header",
        "magic byte 1 is not 0: not Confluent wire format",
        "schema id 6 unknown to the registry",
        prefix + "field payment.id is null",
        prefix + "field payment.id is null",
        prefix + "field payment.id is empty",
        prefix + "value does not decode with its schema (union index out of range)",
        prefix + "value does not decode with its schema (enum index out of range)",
        prefix + "value does not decode with its schema (varint over 10 bytes)",
        prefix + "value does not decode with its schema (negative length)",
        prefix + "field payment.id is not valid UTF-8",
    ]


def test_field_of_wrong_type_and_absent_path() -> None:
    rng = random.Random(2)
    good = _framed(_record(rng, 0))
    assert _reasons([good], "payment.f") == ["schema id 5: field payment.f is a float"]
    assert _reasons([good], "payment.nope") == ["schema id 5: field payment.nope not in the schema"]
    assert _reasons([good], "kind.id") == ["schema id 5: field kind.id not in the schema"]


def test_empty_read() -> None:
    result = decode(pa.chunked_array([], pa.binary()), lambda _: "unused", "a.b", "t")
    assert len(result.ids) == 0 and len(result.times) == 0 and len(result.reason) == 0
