"""recon's consumers and admin clients: settings, librdkafka's log, retries, reachability."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from recon.errors import SourceError
from recon.sources.kafka import avro
from recon.sources.kafka.config import Config, describe

T = TypeVar("T")
_LEADER_MOVING = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
    }
)


def client_conf(cfg: Config) -> dict[str, Any]:
    """Librdkafka settings shared by recon's consumers and admin clients.

    librdkafka's own log lines go to the `recon.kafka` logger (not raw to stderr),
    each distinct one once a minute: an unreachable broker otherwise printed ~95
    lines per try, and every consumer closing its queues a "Purging" line.
    """
    return {"bootstrap.servers": cfg.bootstrap, "logger": KAFKA_LOG, **cfg.client}


class _Repeats(logging.Filter):
    """Lets a librdkafka line through once a minute, whatever its numbers (timings, ids)."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "BGQUEUE" in text or "Purging" in text:  # a consumer closing: not news
            return False
        key = re.sub(r"\d+", "#", text)
        now = time.monotonic()
        if now - self.last.get(key, -self.every_s) < self.every_s:
            return False
        self.last[key] = now
        return True


KAFKA_LOG = logging.getLogger("recon.kafka")
KAFKA_LOG.addFilter(_Repeats())


def new_consumer(cfg: Config, largest_range: int = 100_000) -> Consumer:
    """A consumer that reads by assignment, read_committed, never joining its group."""
    # librdkafka prefetches per partition, also past the range's end: size fetches
    # and the prefetch queue to the largest partition range (~256 B a message), so
    # a small window reads little beyond its end and a big one fetches in bulk.
    # Fetches of 2 MB a partition: bigger ones read faster alone, but librdkafka
    # then holds three times the memory, and in a run the read overlaps the
    # previous span's compute, which is what the run waits for.
    prefetch = min(max(largest_range, 1_000), 100_000)
    fetch_bytes = min(max(largest_range * 256, 1 << 20), 2 << 20)
    return Consumer(
        {
            **client_conf(cfg),
            # librdkafka insists on a group id; it is never joined nor committed to.
            "group.id": f"recon-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            # librdkafka's default, and what every count assumes: aborted records and
            # transaction markers are never delivered, and the high watermark is the
            # last stable offset. A `client:` setting cannot change it.
            "isolation.level": "read_committed",
            # An offset that vanished under us must fail, never silently jump.
            "auto.offset.reset": "error",
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": fetch_bytes,
            "queued.min.messages": prefetch,
            "queued.max.messages.kbytes": 512 << 10,
            # Once its queue holds `prefetch` messages a partition's next fetch waits this
            # long (librdkafka's default: 1 s, which doubled the read of a big range).
            "fetch.queue.backoff.ms": 10,
        }
    )


def partitions(consumer: Consumer, cfg: Config) -> list[int]:
    """The topic's partition ids; an absent topic is an error, not an empty ledger."""
    meta = consumer.list_topics(cfg.topic, timeout=cfg.timeout_s)
    topic = meta.topics.get(cfg.topic)
    if topic is None or topic.error is not None:
        reason = topic.error if topic is not None else "no such topic"
        raise SourceError(f"{describe(cfg)}: {reason}")
    return sorted(topic.partitions)


def reachable(cfg: Config) -> None:
    """Fail fast: the brokers answer and the topic exists, within `timeout_s`, or SourceError.

    Checked once per run: an unreachable cluster used to cost every window its own
    timeouts and hundreds of log lines before the run could exit 3.
    """
    admin = AdminClient(client_conf(cfg))
    try:
        meta = admin.list_topics(cfg.topic, timeout=cfg.timeout_s)
    except KafkaException as exc:
        raise SourceError(
            f"{describe(cfg)}: brokers {cfg.bootstrap} unreachable within "
            f"{cfg.timeout_s:g}s ({exc.args[0]})"
        ) from exc
    topic = meta.topics.get(cfg.topic)
    if topic is None or topic.error is not None:
        reason = topic.error if topic is not None else "no such topic"
        raise SourceError(f"{describe(cfg)}: {reason}")
    if cfg.schema_registry is not None:
        avro.check(cfg.schema_registry)


def retrying(cfg: Config, call: Callable[[], T]) -> T:
    """`call()`, again while it fails with an error Kafka calls retriable, up to `timeout_s`.

    A partition's leader moves in a rolling restart or a preferred-leader election
    (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE); a fresh topic's leaders are
    not known to every broker at once. Those pass; any other error is raised.
    """
    deadline = time.monotonic() + cfg.timeout_s
    pause = 0.1
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0]
            # confluent-kafka does not flag every such error retriable (offsets_for_times).
            if not (
                isinstance(error, KafkaError)
                and (error.retriable() or error.code() in _LEADER_MOVING)
            ):
                raise
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 2.0)
