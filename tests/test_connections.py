"""`connection: ID`: database URLs and Kafka settings from Airflow Connections."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from recon import connections
from recon.config import parse_config
from recon.errors import ConfigError
from recon.sources import kafka, sql

from .helpers import W
from .test_kafka_reader import _produce

CASES = [
    ("postgres://app:p%40ss@db.internal:5433/events?sslmode=require",
     "postgresql+psycopg://app:p%40ss@db.internal:5433/events?sslmode=require"),
    ('{"conn_type": "postgres", "host": "h", "login": "u", "password": "pw", "port": 5432, '
     '"schema": "d"}', "postgresql+psycopg://u:pw@h:5432/d"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "url"), CASES)
def test_a_postgres_connection_in_either_form_gives_the_url(value: str, url: str) -> None:
    assert connections.parse("c", value).postgresql_url() == url


def test_a_missing_connection_names_itself(monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)
    with pytest.raises(ConfigError, match="connection nowhere"):
        parse_config({
            "pipeline": "p",
            "stages": [
                {"name": "a", "source": "sql", "connection": "nowhere", "table": "t"},
                {"name": "b", "source": "files", "path": "x"},
            ],
        })  # fmt: skip


def test_stages_read_through_connections(
    monkeypatch, pg_url: str, bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """A sql stage and a kafka stage that name connections instead of a URL and brokers
    (AIRFLOW_CONN_* as Airflow's environment backend has them): 3 receipts read from
    PostgreSQL and 2 records from the topic, exactly."""
    host, port = bootstrap.rsplit(":", 1)
    monkeypatch.setenv("AIRFLOW_CONN_RECON_PG", "postgres://recon@127.0.0.1:5432/recon")
    monkeypatch.setenv(
        "AIRFLOW_CONN_RECON_KAFKA",
        json.dumps({"conn_type": "kafka", "extra": {"bootstrap.servers": f"{host}:{port}"}}),
    )
    with psycopg.connect(pg_url.replace("+psycopg", "")) as conn:
        conn.execute(f"CREATE TABLE {unique} (event_id text, received_at timestamptz)")
        for i in range(3):
            conn.execute(f"INSERT INTO {unique} VALUES ('e{i}', '2026-11-20T10:0{i}:00Z')")
    from recon.simulate.plant import create_topic

    create_topic(bootstrap, unique, 1)
    _produce(bootstrap, unique, [{"key": b"e0", "t": "10:00:01"}, {"key": b"e1", "t": "10:01:01"}])
    cfg = parse_config({
        "pipeline": "p",
        "stages": [
            {"name": "gw", "source": "sql", "connection": "recon_pg", "table": unique},
            {"name": "bus", "source": "kafka", "connection": "recon_kafka", "topic": unique},
        ],
    })  # fmt: skip
    origin, bus = cfg.stages
    assert isinstance(origin, sql.Config) and isinstance(bus, kafka.Config)
    assert origin.url == "postgresql+psycopg://recon@127.0.0.1:5432/recon"
    assert bus.bootstrap == f"{host}:{port}"
    assert sorted(sql.read(origin, W).table["event_id"].to_pylist()) == ["e0", "e1", "e2"]
    assert sorted(kafka.read(bus, W).table["event_id"].to_pylist()) == ["e0", "e1"]
