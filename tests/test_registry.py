"""`kafka` source with Avro values in Confluent wire format, against Kafka and a real registry.

The registry is Apicurio Registry's Confluent-compatible API, started by
scripts/services.sh. Schemas are registered over its REST API and values
written with fastavro in the wire format (magic 0, 4-byte schema ID, body),
which is byte for byte what confluent_kafka's AvroSerializer writes
(`test_confluent_serializer_values`, when its extra is installed).
"""

from __future__ import annotations

import io
import json
import struct
import urllib.error
import urllib.request

import fastavro
import pytest
from confluent_kafka import Producer

from recon.errors import SourceError
from recon.simulate.plant import create_topic
from recon.sources import kafka
from recon.sources.kafka import avro as registry
from recon.timeutil import epoch_ms

from .helpers import W, at

PAYMENT_V1 = {
    "type": "record",
    "name": "PaymentEvent",
    "namespace": "shop",
    "fields": [
        {
            "name": "payment",
            "type": {
                "type": "record",
                "name": "Payment",
                "fields": [
                    {"name": "id", "type": "string"},
                    {"name": "amount", "type": "double"},
                ],
            },
        },
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}
# v2 adds a field before the ID (its offset in the body moves) and renames amount.
PAYMENT_V2 = {
    "type": "record",
    "name": "PaymentEvent",
    "namespace": "shop",
    "fields": [
        {"name": "source", "type": ["null", "string"], "default": None},
        {
            "name": "payment",
            "type": {
                "type": "record",
                "name": "Payment",
                "fields": [
                    {"name": "currency", "type": "string", "default": "EUR"},
                    {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
                    {"name": "amount_cents", "type": "long"},
                ],
            },
        },
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    ],
}
NO_PAYMENT = {
    "type": "record",
    "name": "Heartbeat",
    "namespace": "shop",
    "fields": [{"name": "seq", "type": "long"}],
}


def _http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data, method=method, headers={"Content-Type": "application/vnd.schemaregistry.v1+json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _register(url: str, subject: str, schema: dict) -> int:
    status, body = _http(
        "POST", f"{url}/subjects/{subject}/versions", {"schema": json.dumps(schema)}
    )
    assert status == 200, body
    return int(body["id"])


def _framed(schema_id: int, schema: dict, record: dict) -> bytes:
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


def _produce(bootstrap: str, topic: str, messages: list[tuple[int, str, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, hms, value in messages:
        producer.produce(topic, value, partition=partition, timestamp=epoch_ms(at(hms)))
    assert producer.flush(30) == 0


def _cfg(bootstrap: str, topic: str, url: str, **kw: object) -> kafka.Config:
    return kafka.Config(
        name="payments",
        source="kafka",
        bootstrap=bootstrap,
        topic=topic,
        id="value:payment.id",
        schema_registry={"url": url, "timeout_s": 5},
        out_of_order="0s",
        **kw,
    )


def _v1(event_id: str, hms: str) -> dict:
    return {"payment": {"id": event_id, "amount": 9.5}, "occurred_at": at(hms)}


def _v2(event_id: str, hms: str) -> dict:
    return {
        "source": "pos",
        "payment": {"currency": "USD", "id": event_id, "amount_cents": 950},
        "occurred_at": at(hms),
    }


UUID_A = "7c1d3a4e-0000-4000-8000-00000000000a"
UUID_B = "7c1d3a4e-0000-4000-8000-00000000000b"


def _plant(bootstrap: str, url: str, topic: str) -> tuple[int, int, int]:
    """Two versions of the payment schema and a schema without the field, in one window."""
    v1 = _register(url, f"{topic}-value", PAYMENT_V1)
    v2 = _register(url, f"{topic}-value", PAYMENT_V2)
    other = _register(url, f"{topic}-heartbeat", NO_PAYMENT)
    assert len({v1, v2, other}) == 3
    create_topic(bootstrap, topic, 2)
    good_v1 = _framed(v1, PAYMENT_V1, _v1("p-1", "10:00:01"))
    _produce(
        bootstrap,
        topic,
        [
            (0, "09:59:59", _framed(v1, PAYMENT_V1, _v1("early", "09:59:59"))),  # p0@0: before
            (0, "10:00:01", good_v1),  # p0@1
            (0, "10:05:00", _framed(v1, PAYMENT_V1, _v1("p-2", "10:05:00"))),  # p0@2
            (0, "10:10:00", _framed(v2, PAYMENT_V2, _v2(UUID_A, "10:10:00"))),  # p0@3
            (0, "10:20:00", struct.pack(">bI", 0, 987_654) + b"\x02x"),  # p0@4: unknown id
            (0, "10:30:00", good_v1[:-4]),  # p0@5: truncated body
            (0, "10:40:00", b'{"payment": {"id": "json"}}'),  # p0@6: not wire format
            (0, "11:00:00", _framed(v2, PAYMENT_V2, _v2(UUID_B, "11:00:00"))),  # p0@7: after
            (1, "10:15:00", _framed(v2, PAYMENT_V2, _v2(UUID_B, "10:15:00"))),  # p1@0
            (1, "10:25:00", _framed(other, NO_PAYMENT, {"seq": 7})),  # p1@1: no payment.id
            (1, "10:35:00", good_v1 + b"\x00"),  # p1@2: a trailing byte
            (1, "10:45:00", None),  # p1@3: a tombstone
        ],
    )
    return v1, v2, other


def test_avro_ids_two_versions_and_every_bad_value(
    bootstrap: str, registry_url: str, unique: str
) -> None:
    v1, v2, other = _plant(bootstrap, registry_url, unique)
    cfg = _cfg(bootstrap, unique, registry_url)
    kafka.reachable(cfg)
    read = kafka.read(cfg, W)
    rows = sorted(
        zip(
            read.table["event_id"].to_pylist(),
            read.table["partition"].to_pylist(),
            read.table["offset"].to_pylist(),
            strict=True,
        )
    )
    assert rows == sorted([("p-1", 0, 1), ("p-2", 0, 2), (UUID_A, 0, 3), (UUID_B, 1, 0)])
    # The record timestamps, not the payload's (no `time:`).
    assert sorted(read.table["stage_time"].to_pylist()) == [
        at("10:00:01"),
        at("10:05:00"),
        at("10:10:00"),
        at("10:15:00"),
    ]
    bad = sorted((b.where, b.reason, b.time) for b in read.bad_records)
    assert bad == [
        (f"{unique}[0]@4", "schema id 987654 unknown to the registry", at("10:20:00")),
        (
            f"{unique}[0]@5",
            f"schema id {v1}: value does not decode with its schema (truncated)",
            at("10:30:00"),
        ),
        (
            f"{unique}[0]@6",
            "magic byte 123 is not 0: not Confluent wire format",
            at("10:40:00"),
        ),
        (
            f"{unique}[1]@1",
            f"schema id {other}: field payment.id not in the schema",
            at("10:25:00"),
        ),
        (
            f"{unique}[1]@2",
            f"schema id {v1}: value does not decode with its schema (trailing bytes)",
            at("10:35:00"),
        ),
        (f"{unique}[1]@3", "no value", at("10:45:00")),
    ]
    assert read.unreadable == 6
    # Every framed value's schema ID, readable or not (engine/schemas.py counts them).
    assert read.schema_ids is not None and read.schema_ids.topic == unique
    framed = read.schema_ids.table
    assert sorted(
        zip(*(framed[c].to_pylist() for c in ("partition", "offset", "schema_id")), strict=True)
    ) == [
        (0, 1, v1),
        (0, 2, v1),
        (0, 3, v2),
        (0, 4, 987_654),
        (0, 5, v1),
        (1, 0, v2),
        (1, 1, other),
        (1, 2, v1),
    ]


def test_avro_time_from_the_payload(bootstrap: str, registry_url: str, unique: str) -> None:
    """`time: value:occurred_at` (millis in v1, micros in v2) is the row's time."""
    v1 = _register(registry_url, f"{unique}-value", PAYMENT_V1)
    v2 = _register(registry_url, f"{unique}-value", PAYMENT_V2)
    create_topic(bootstrap, unique, 1)
    _produce(
        bootstrap,
        unique,
        [
            (0, "10:00:05", _framed(v1, PAYMENT_V1, _v1("m", "09:58:00.123"))),
            (0, "10:00:06", _framed(v2, PAYMENT_V2, _v2(UUID_A, "09:59:00.000456"))),
        ],
    )
    cfg = _cfg(bootstrap, unique, registry_url, time="value:occurred_at")
    read = kafka.read(cfg, W)
    assert read.bad_records == []
    ids, times = read.table["event_id"].to_pylist(), read.table["stage_time"].to_pylist()
    got = dict(zip(ids, times, strict=True))
    assert got == {"m": at("09:58:00.123"), UUID_A: at("09:59:00.000456")}


def test_registry_down_is_a_source_error(bootstrap: str, unique: str) -> None:
    create_topic(bootstrap, unique, 1)
    _produce(bootstrap, unique, [(0, "10:00:01", struct.pack(">bI", 0, 1) + b"\x02x")])
    cfg = _cfg(bootstrap, unique, "http://127.0.0.1:9/apis/ccompat/v7")
    with pytest.raises(SourceError, match=r"schema registry http://127.0.0.1:9/\S+ unreachable"):
        kafka.reachable(cfg)
    with pytest.raises(SourceError, match="unreachable"):
        kafka.read(cfg, W)


def test_schemas_fetched_once_per_config(registry_url: str, unique: str) -> None:
    """Schemas are immutable by ID: the second lookup is the cache's, even with the registry
    gone; an unknown ID is asked again (it may be registered later in the run)."""
    sid = _register(registry_url, f"{unique}-value", PAYMENT_V1)
    cfg = registry.RegistryConfig(url=registry_url)
    first = registry.fetch(cfg, sid)
    assert isinstance(first, registry.Schema)
    gone = cfg.model_copy(update={"url": "http://127.0.0.1:9"})
    gone._schemas.update(cfg._schemas)
    assert registry.fetch(gone, sid) is first
    assert registry.fetch(cfg, 987_655) == "schema id 987655 unknown to the registry"


def test_confluent_serializer_values(bootstrap: str, registry_url: str, unique: str) -> None:
    """confluent_kafka's SchemaRegistryClient and AvroSerializer work against Apicurio, and
    recon reads what they write (needs confluent-kafka's schemaregistry extra)."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    client = SchemaRegistryClient({"url": registry_url})
    create_topic(bootstrap, unique, 1)
    values = []
    for schema, record in (
        (PAYMENT_V1, _v1("c-1", "10:00:00")),
        (PAYMENT_V2, _v2(UUID_A, "10:00:00")),
    ):
        serialize = AvroSerializer(client, json.dumps(schema))
        values.append(serialize(record, SerializationContext(unique, MessageField.VALUE)))
    _produce(bootstrap, unique, [(0, "10:01:00", values[0]), (0, "10:02:00", values[1])])
    read = kafka.read(_cfg(bootstrap, unique, registry_url), W)
    assert sorted(read.table["event_id"].to_pylist()) == sorted(["c-1", UUID_A])
    assert read.bad_records == []


def test_config_requires_registry_with_value_paths() -> None:
    base = {"name": "k", "source": "kafka", "bootstrap": "x:1", "topic": "t"}
    with pytest.raises(ValueError, match="give schema_registry"):
        kafka.Config(**base, id="value:payment.id")
    with pytest.raises(ValueError, match="only used with id 'value:"):
        kafka.Config(**base, schema_registry={"url": "http://r"})
    with pytest.raises(ValueError, match="not both"):
        kafka.Config(
            **base,
            id="value:a",
            schema_registry={
                "url": "http://r",
                "username": "u",
                "password": "p",
                "basic_auth": "u:p",
            },
        )
    ok = kafka.Config(**base, id="value:a", time="value:t", schema_registry={"url": "http://r"})
    assert ok.schema_registry is not None


def test_a_url_that_is_not_the_api_is_a_source_error(registry_url: str) -> None:
    """A bare 404 (the API path left out) must not make every message unreadable."""
    cfg = registry.RegistryConfig(url=registry_url.split("/apis/")[0] + "/nothing-here")
    with pytest.raises(SourceError, match="HTTP 404"):
        registry.fetch(cfg, 1)
    with pytest.raises(SourceError, match="HTTP 404"):
        registry.check(cfg)
