"""Fixtures for the real servers started by scripts/services.sh.

With CI=true a missing server fails the test: a green run that tested
nothing is worse than a red one. Locally it skips, saying how to start it.
"""

from __future__ import annotations

import os
import socket
import urllib.request
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

PG_URL = os.environ.get("RECON_PG_URL", "postgresql+psycopg://recon@127.0.0.1:5432/recon")
BOOTSTRAP = os.environ.get("RECON_KAFKA", "127.0.0.1:9092")
REGISTRY_URL = os.environ.get("RECON_SCHEMA_REGISTRY", "http://127.0.0.1:8081/apis/ccompat/v7")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def missing_in_ci_fails(message: str) -> None:
    """A missing server or tool: fail under CI=true (a green run that tested nothing is worse
    than a red one), skip locally with how to get it."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _require(name: str, host: str, port: int) -> None:
    if not _reachable(host, port):
        missing_in_ci_fails(
            f"{name} is not reachable at {host}:{port}; start it with scripts/services.sh up"
        )


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = make_url(PG_URL)
    _require("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
    return PG_URL


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[str]:
    """A results store in a database of its own, dropped after the test: no test sees the
    rows (or the schema version) another test or an earlier run left."""
    name = f"recon_store_{uuid.uuid4().hex[:12]}"
    admin = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def bootstrap() -> str:
    host, port = BOOTSTRAP.rsplit(":", 1)
    _require("Kafka", host, int(port))
    return BOOTSTRAP


@pytest.fixture(scope="session")
def registry_url() -> str:
    """The Confluent-compatible API of the schema registry (Apicurio) services.sh starts."""
    try:
        with urllib.request.urlopen(REGISTRY_URL + "/config", timeout=10) as response:
            status = response.status
    except OSError:
        status = 0
    if status != 200:
        missing_in_ci_fails(
            f"no schema registry answers at {REGISTRY_URL}; start it with scripts/services.sh up"
        )
    return REGISTRY_URL


@pytest.fixture
def unique() -> str:
    """A name no other test (or earlier run) uses: tables, topics, groups."""
    return f"t{uuid.uuid4().hex[:10]}"
