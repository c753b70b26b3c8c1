"""Write a Plan into the real servers: receipts table, Kafka topics, lake parquet, group offsets."""

from __future__ import annotations

import io
import json
import struct
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

try:
    from confluent_kafka import ConsumerGroupTopicPartitions
except ImportError:  # pragma: no cover  (older releases, which had it in admin only)
    from confluent_kafka.admin import ConsumerGroupTopicPartitions  # type: ignore[no-redef,attr-defined]

from recon.simulate.scenario import Plan
from recon.sources.sql import conninfo


@dataclass(frozen=True)
class Targets:
    """Where to plant: unique names per test keep runs apart on shared servers."""

    pg_url: str
    bootstrap: str
    lake_path: Path
    name: str = "payments"
    # A Confluent-compatible schema registry: the topic's values are then Avro in
    # Confluent wire format (PAYMENT_V1, PAYMENT_V2 from the plan's schema switch).
    registry: str | None = None

    @property
    def receipts_table(self) -> str:
        """The webhook receipts table."""
        return f"{self.name}_webhook_receipts"

    @property
    def topic(self) -> str:
        """The events topic."""
        return f"{self.name}-events"

    @property
    def dead_letter_topic(self) -> str:
        """The dead-letter topic."""
        return f"{self.name}-events-dead-letter"

    @property
    def group(self) -> str:
        """The lake loader's consumer group."""
        return f"{self.name}-lake-loader"


# The producer's value schemas: v2 puts a field before the event ID, so a reader still
# holding v1 for it (a stale cache) cannot read it.
PAYMENT_V1 = {
    "type": "record",
    "name": "PaymentEvent",
    "namespace": "recon.demo",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
    ],
}
PAYMENT_V2 = {
    "type": "record",
    "name": "PaymentEvent",
    "namespace": "recon.demo",
    "fields": [
        {"name": "currency", "type": "string", "default": "EUR"},
        {"name": "event_id", "type": "string"},
        {"name": "amount_cents", "type": "long"},
    ],
}


def plant(p: Plan, t: Targets) -> tuple[int, int] | None:
    """Write every ledger of the plan; with a registry, the IDs of schema v1 and v2."""
    write_receipts(p.receipts, t.pg_url, t.receipts_table)
    create_topic(t.bootstrap, t.topic, p.scenario.partitions)
    create_topic(t.bootstrap, t.dead_letter_topic, 1)
    schema_ids = None
    if t.registry is None:
        produce_events(p.kafka, t.bootstrap, t.topic)
    else:
        subject = f"{t.topic}-value"
        schema_ids = (
            register(t.registry, subject, PAYMENT_V1),
            register(t.registry, subject, PAYMENT_V2),
        )
        produce_events(p.kafka, t.bootstrap, t.topic, values=avro_values(p.kafka, schema_ids))
    produce_dead_letters(p.dead_letters, t.bootstrap, t.dead_letter_topic, t.topic)
    commit_offsets(t.bootstrap, t.group, t.topic, p.committed)
    write_lake(p.lake, t.lake_path)
    return schema_ids


def register(url: str, subject: str, schema: dict[str, Any]) -> int:
    """Register a schema version under `subject` (again: the same ID); returns its ID."""
    body = json.dumps({"schema": json.dumps(schema)}).encode()
    request = urllib.request.Request(
        f"{url.rstrip('/')}/subjects/{urllib.parse.quote(subject, safe='')}/versions",
        body,
        method="POST",
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(json.loads(response.read())["id"])


def avro_values(kafka: pa.Table, schema_ids: tuple[int, int]) -> list[bytes]:
    """Each message's value in Confluent wire format: v1, or v2 where `new_schema`."""
    old, new = (fastavro.parse_schema(s) for s in (PAYMENT_V1, PAYMENT_V2))
    headers = [struct.pack(">bI", 0, sid) for sid in schema_ids]
    values = []
    buffer = io.BytesIO()
    for event_id, is_new in zip(
        kafka["event_id"].to_pylist(), kafka["new_schema"].to_pylist(), strict=True
    ):
        buffer.seek(0)
        buffer.truncate()
        buffer.write(headers[is_new])
        record = {"event_id": event_id, "amount_cents": 1250}
        if is_new:
            record["currency"] = "EUR"
        fastavro.schemaless_writer(buffer, new if is_new else old, record)
        values.append(buffer.getvalue())
    return values


def pipeline_config(t: Targets, **overrides: Any) -> dict[str, Any]:
    """The recon config (as a mapping) for a planted webhook -> kafka -> lake pipeline."""
    config: dict[str, Any] = {
        "pipeline": t.name,
        "window": {"size": "1h", "grace": "30m", "settle": "2h", "skew": "1m"},
        "thresholds": {"loss_rate": 0.0001},
        "stages": [
            {
                "name": "webhook",
                "source": "sql",
                "url": t.pg_url,
                "table": t.receipts_table,
                "id": "event_id",
                "time": "received_at",
            },
            {
                "name": "kafka",
                "source": "kafka",
                "bootstrap": t.bootstrap,
                "topic": t.topic,
                "id": "key",
                "consumer_group": t.group,
            },
            {
                "name": "lake",
                "source": "parquet",
                "path": str(t.lake_path),
                "partitioning": "hive",
                "id": "event_id",
                "time": "ingested_at",
            },
        ],
        "dead_letters": [
            {
                "name": "dlq",
                "stage": "lake",
                "source": "kafka",
                "bootstrap": t.bootstrap,
                "topic": t.dead_letter_topic,
                "id": "header:event_id",
            },
        ],
    }
    if t.registry is not None:
        kafka = config["stages"][1]
        kafka["id"] = "value:event_id"
        kafka["schema_registry"] = {"url": t.registry}
    config.update(overrides)
    return config


def write_receipts(receipts: pa.Table, pg_url: str, table: str) -> None:
    """(Re)create the receipts table, COPY the rows in, index the time column."""
    create_receipts_table(pg_url, table)
    append_receipts(receipts, pg_url, table)
    index_receipts(pg_url, table)


def create_receipts_table(pg_url: str, table: str) -> None:
    """A fresh, empty receipts table (a webhook gateway's receipt log)."""
    with psycopg.connect(conninfo(pg_url)) as conn, conn.cursor() as cur:
        ident = psycopg.sql.Identifier(table)
        cur.execute(psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
        cur.execute(
            psycopg.sql.SQL(
                "CREATE TABLE {} (event_id text, received_at timestamptz NOT NULL, "
                "payload jsonb DEFAULT '{{}}')"
            ).format(ident)
        )


def append_receipts(receipts: pa.Table, pg_url: str, table: str) -> None:
    """COPY receipt rows into an existing table."""
    buffer = io.BytesIO()
    pacsv.write_csv(receipts, buffer, pacsv.WriteOptions(include_header=False))
    with psycopg.connect(conninfo(pg_url)) as conn, conn.cursor() as cur:
        ident = psycopg.sql.Identifier(table)
        with cur.copy(
            psycopg.sql.SQL("COPY {} (event_id, received_at) FROM STDIN (FORMAT csv)").format(ident)
        ) as copy:
            copy.write(buffer.getvalue())


def index_receipts(pg_url: str, table: str) -> None:
    """The time index every real receipts table has, and the map autovacuum keeps of it.

    recon's reads filter on the index. Without the visibility map, an index-only
    count visits every row's heap page, and `recon check` over a freshly planted
    day measures that instead of recon.
    """
    with psycopg.connect(conninfo(pg_url), autocommit=True) as conn:  # VACUUM: no transaction
        ident = psycopg.sql.Identifier(table)
        conn.execute(psycopg.sql.SQL("CREATE INDEX ON {} (received_at)").format(ident))
        conn.execute(psycopg.sql.SQL("VACUUM (ANALYZE) {}").format(ident))


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """A fresh topic; old record timestamps must not be deleted, so retention is infinite."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:  # wait for it: a deletion still in flight could remove the topic created below
        admin.delete_topics([topic], operation_timeout=30)[topic].result(60)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise
    config = {"retention.ms": "-1", "message.timestamp.type": "CreateTime"}
    for attempt in range(60):
        future = admin.create_topics([NewTopic(topic, partitions, 1, config=config)])[topic]
        try:
            future.result(30)
            _await_leaders(admin, topic, partitions)
            return
        except KafkaException as exc:
            # The deletion above completes asynchronously: wait for it, then create.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS or attempt == 59:
                raise
            time.sleep(0.5)


def _await_leaders(admin: AdminClient, topic: str, partitions: int) -> None:
    """Creation returns before every partition has a leader; producing then would fail."""
    for _ in range(100):
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        if (
            meta is not None
            and meta.error is None
            and len(meta.partitions) == partitions
            and all(p.leader >= 0 for p in meta.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no leader for every partition after 10 s")


def _producer(bootstrap: str) -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,  # keeps per-partition order, so offsets are predictable
            "linger.ms": 20,
            "batch.size": 1 << 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1 << 21,
        }
    )


def _produce_all(producer: Producer, send: Any, n: int) -> None:
    for i in range(n):
        while True:
            try:
                send(i)
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} messages were not delivered")


def produce_events(
    kafka: pa.Table,
    bootstrap: str,
    topic: str,
    check: bool = True,
    values: list[bytes] | None = None,
) -> None:
    """Produce keyed messages with their planned record timestamps, in offset order.

    `check` compares the topic's end offsets with the plan's (only a plan
    produced into a fresh topic has the broker's offsets). The values are JSON
    unless given (`avro_values`).
    """
    producer = _producer(bootstrap)
    ids = kafka["event_id"].to_pylist()
    keys = [i.encode() for i in ids]
    if values is None:
        values = [json.dumps({"event_id": i, "amount_cents": 1250}).encode() for i in ids]
    part = kafka["partition"].to_pylist()
    ts = kafka["ts_ms"].to_pylist()
    produce = producer.produce
    _produce_all(
        producer,
        lambda i: produce(topic, values[i], keys[i], partition=part[i], timestamp=ts[i]),
        len(ids),
    )
    if check:
        _check_offsets(bootstrap, topic, kafka)


def _check_offsets(bootstrap: str, topic: str, kafka: pa.Table) -> None:
    """The plan's offsets must be the broker's (a fresh topic, ordered idempotent producer)."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "recon-plant-check"})
    try:
        consumer.list_topics(topic, timeout=30)  # a new client must learn the topic first
        parts = kafka["partition"].to_numpy()
        for p in np.unique(parts):
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, int(p)), timeout=30)
            if high != int((parts == p).sum()):
                raise RuntimeError(
                    f"{topic}[{p}] has {high} messages, planned {(parts == p).sum()}"
                )
    finally:
        consumer.close()


def produce_dead_letters(dead: pa.Table, bootstrap: str, topic: str, source_topic: str) -> None:
    """Raw undecodable bytes plus the event ID and the error in headers, as the loader writes."""
    producer = _producer(bootstrap)
    ids = dead["event_id"].to_pylist()
    errors = dead["error"].to_pylist()
    ts = dead["ts_ms"].to_pylist()
    produce = producer.produce

    def send(i: int) -> None:
        headers = [
            ("event_id", ids[i].encode()),
            ("error", errors[i].encode()),
            ("source_topic", source_topic.encode()),
        ]
        produce(
            topic,
            b"\x00\x00\x00\x00\x2a\xff\xfe garbled avro",
            None,
            timestamp=ts[i],
            headers=headers,
        )

    _produce_all(producer, send, len(ids))


def commit_offsets(bootstrap: str, group: str, topic: str, committed: dict[int, int]) -> None:
    """Set the consumer group's committed offsets, as the lake loader would have."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p, off) for p, off in sorted(committed.items())]
    )
    # A new broker answers the first group request NOT_COORDINATOR per partition (the
    # future itself succeeds): commit again until every partition took its offset.
    for _ in range(30):
        failed = [
            tp
            for future in admin.alter_consumer_group_offsets([request]).values()
            for tp in future.result(30).topic_partitions
            if tp.error is not None
        ]
        if not failed:
            return
        time.sleep(0.5)
    raise RuntimeError(f"group {group}: offsets not committed: {failed[0].error}")


def write_lake(lake: pa.Table, path: Path, batch: str | None = None) -> None:
    """Hive-partitioned parquet by ingestion hour: dt=YYYY-MM-DD/hour=HH/part-N.parquet.

    Without `batch` the partitions written replace what was there; with it, the
    files are named part-<batch>-N and added next to the existing ones.
    """
    t = lake["ingested_at"]
    table = lake.append_column("dt", pc.strftime(t, "%Y-%m-%d")).append_column(
        "hour", pc.strftime(t, "%H")
    )
    ds.write_dataset(
        table,
        str(path),
        format="parquet",
        partitioning=ds.partitioning(
            pa.schema([("dt", pa.string()), ("hour", pa.string())]), flavor="hive"
        ),
        existing_data_behavior="overwrite_or_ignore" if batch else "delete_matching",
        basename_template=f"part-{batch}-{{i}}.parquet" if batch else "part-{i}.parquet",
    )
