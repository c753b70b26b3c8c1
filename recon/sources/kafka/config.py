"""A Kafka source's configuration: the topic, where its event ID is, the client."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from recon import connections
from recon.sources.base import Duration, SourceConfig
from recon.sources.kafka import avro


class Config(SourceConfig):
    """A topic; the event ID is the key, `header:NAME`, or a field path of the value.

    `json:field.path` reads JSON values; `value:field.path` reads Avro values in
    Confluent wire format, whose schemas come by ID from `schema_registry`
    (recon/sources/kafka/avro.py). With Avro values, `time: value:field.path` may
    take each event's time from a timestamp-millis/micros field instead of the
    record's timestamp (which still decides which records a read holds).
    """

    source: Literal["kafka"]
    bootstrap: str
    topic: str
    id: str = "key"
    consumer_group: str | None = None
    # Extra librdkafka settings (security.protocol, sasl.*, ...); ${ENV} for secrets.
    client: dict[str, str | int | bool] = Field(default_factory=dict)
    # An Airflow Connection holding bootstrap.servers and the client settings (its extra).
    connection: str | None = None
    timeout_s: float = Field(default=30, gt=0, le=3600)
    schema_registry: avro.RegistryConfig | None = None
    time: str | None = None
    # How far a record's timestamp may be behind one stored before it in its
    # partition: batching (linger.ms) and retries up to delivery.timeout.ms (2 min).
    out_of_order: Duration = Field(default=timedelta(minutes=5), ge=timedelta(0))

    def read_past_end(self) -> timedelta:
        """A read of [a, b) holds the offsets up to the first record stamped this past b."""
        return self.out_of_order

    @model_validator(mode="before")
    @classmethod
    def _from_connection(cls, data: Any) -> Any:
        """`connection: ID` gives bootstrap and client settings (`client:` keys win)."""

        def fill(conn: connections.Connection) -> dict[str, Any]:
            settings = conn.kafka_settings()
            bootstrap = settings.pop("bootstrap.servers")
            return {"bootstrap": bootstrap, "client": {**settings, **data.get("client", {})}}

        return connections.fill_from(data, "bootstrap", fill)

    @field_validator("id")
    @classmethod
    def _id_spec(cls, value: str) -> str:
        if value == "key" or (
            value.startswith(("header:", "json:", "value:")) and value.split(":", 1)[1]
        ):
            return value
        raise ValueError("id must be 'key', 'header:NAME', 'json:field.path' or 'value:field.path'")

    @model_validator(mode="after")
    def _avro_needs_registry(self) -> Config:
        """`value:` paths are Avro fields: they need the registry, and it needs them."""
        avro = self.id.startswith("value:")
        if avro and self.schema_registry is None:
            raise ValueError("id 'value:...' reads Avro values: give schema_registry")
        if self.schema_registry is not None and not avro:
            raise ValueError("schema_registry is only used with id 'value:field.path'")
        if self.time is not None and not (
            avro and self.time.startswith("value:") and self.time.split(":", 1)[1]
        ):
            raise ValueError("time must be 'value:field.path', with id 'value:field.path'")
        return self


def describe(cfg: Config) -> str:
    """Where this source reads from."""
    return f"kafka topic {cfg.topic} @ {cfg.bootstrap}"
