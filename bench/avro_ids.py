"""Event IDs out of Confluent-framed Avro values: messages per second, three ways.

    .venv/bin/python bench/avro_ids.py [--messages 500000]

1. fastavro.schemaless_reader per message (the plain loop), taking the field;
2. fastavro's compiled reader per message with the ID field only (a reader
   schema projecting the writer's record to the field path: fastavro then
   skips the other fields instead of building them);
3. recon.sources.kafka.avro.decode: columnar, every value of a schema walked at
   once with numpy (what the kafka source uses).

Each checks its IDs against the others. The values are a payment event of a
dozen fields (nested record, union, enum, array, map, timestamps), the ID
being a field of a nested record in the middle, as in `id: value:payment.id`.
"""

from __future__ import annotations

import argparse
import io
import struct
import time
import uuid

import fastavro
import pyarrow as pa

from recon.sources.kafka.avro import Schema, decode

WRITER = {
    "type": "record",
    "name": "PaymentEvent",
    "namespace": "bench",
    "fields": [
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["AUTH", "CAPTURE"]}},
        {"name": "source", "type": ["null", "string"]},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {
            "name": "payment",
            "type": {
                "type": "record",
                "name": "Payment",
                "fields": [
                    {"name": "merchant", "type": "string"},
                    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
                    {"name": "amount", "type": "double"},
                ],
            },
        },
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "retries", "type": "int"},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}
SCHEMA_ID = 7


def _values(n: int) -> tuple[list[bytes], list[str]]:
    parsed = fastavro.parse_schema(WRITER)
    template = []
    for i in range(1_000):  # distinct bodies, repeated with fresh IDs
        template.append(
            {
                "kind": "CAPTURE" if i % 3 else "AUTH",
                "source": None if i % 4 == 0 else f"pos-{i % 17}",
                "tags": ["eu", "card"][: i % 3],
                "payment": {"merchant": f"m{i % 97}", "id": "", "amount": i * 1.5},
                "attrs": {"a": i} if i % 2 else {},
                "occurred_at": 1_780_000_000_000 + i,
                "retries": i % 5,
                "note": None,
            }
        )
    out, ids = [], []
    header = struct.pack(">bI", 0, SCHEMA_ID)
    for i in range(n):
        record = dict(template[i % len(template)])
        event_id = str(uuid.UUID(int=i))
        record["payment"] = {**record["payment"], "id": event_id}
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, parsed, record)
        out.append(buf.getvalue())
        ids.append(event_id)
    return out, ids


def plain(values: list[bytes]) -> list[str]:
    schema = fastavro.parse_schema(WRITER)
    ids = []
    for v in values:
        ids.append(str(fastavro.schemaless_reader(io.BytesIO(v[5:]), schema)["payment"]["id"]))
    return ids


def projected(values: list[bytes]) -> list[str]:
    # fastavro resolves writer to reader: fields the reader lacks are skipped, not built.
    reader = {
        "type": "record",
        "name": "PaymentEvent",
        "namespace": "bench",
        "fields": [
            {
                "name": "payment",
                "type": {
                    "type": "record",
                    "name": "Payment",
                    "fields": [{"name": "id", "type": "string"}],
                },
            }
        ],
    }
    writer = fastavro.parse_schema(WRITER)
    reader = fastavro.parse_schema(reader)
    ids = []
    for v in values:
        ids.append(
            str(fastavro.schemaless_reader(io.BytesIO(v[5:]), writer, reader)["payment"]["id"])
        )
    return ids


def columnar(values: list[bytes]) -> list[str]:
    named: dict = {}
    schema = Schema(SCHEMA_ID, fastavro.parse_schema(WRITER, named_schemas=named), named)
    raw = pa.chunked_array([pa.array(values, pa.binary())])
    result = decode(raw, lambda _sid: schema, "payment.id", "occurred_at")
    assert result.reason.null_count == len(values), result.reason.drop_null()[:3]
    return result.ids.to_pylist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500_000)
    args = parser.parse_args()
    values, expected = _values(args.messages)
    size = sum(map(len, values)) / len(values)
    print(f"{len(values):,} values of {size:.0f} bytes on average")
    for name, fn in (("schemaless_reader", plain), ("projected reader", projected)):
        t0 = time.perf_counter()
        got = fn(values)
        took = time.perf_counter() - t0
        assert got == expected, name
        print(f"{name:>20}: {took:6.2f} s  {len(values) / took / 1000:8.0f} k msg/s")
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        got = columnar(values)
        best = min(best, time.perf_counter() - t0)
        assert got == expected, "columnar"
    print(
        f"{'columnar (recon)':>20}: {best:6.2f} s  {len(values) / best / 1000:8.0f} k msg/s"
        "  (ID and time; best of 3)"
    )


if __name__ == "__main__":
    main()
