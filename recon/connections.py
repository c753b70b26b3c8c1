"""Airflow Connections as a source of credentials: `connection: ID` instead of a URL.

Resolved as Airflow resolves them: from the environment variable AIRFLOW_CONN_<ID>
(a URI or Airflow's JSON form) wherever recon runs, else, inside Airflow, through
its connections and secrets backends (`airflow.sdk.Connection.get`). So a worker
needs no database URL or Kafka setting in its environment, and the same config
runs from a laptop with the variable set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from recon.errors import ConfigError


@dataclass(frozen=True)
class Connection:
    """The fields of an Airflow Connection recon uses."""

    conn_id: str
    conn_type: str
    host: str | None = None
    login: str | None = None
    password: str | None = None
    port: int | None = None
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def postgresql_url(self) -> str:
        """A SQLAlchemy URL for psycopg 3 (Airflow's `postgres` type, or any SQL URL)."""
        auth = ""
        if self.login:
            auth = quote(self.login, safe="")
            if self.password:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        port = f":{self.port}" if self.port else ""
        query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in sorted(self.extra.items()))
        url = f"postgresql+psycopg://{auth}{self.host or ''}{port}/{self.schema or ''}"
        return f"{url}?{query}" if query else url

    def kafka_settings(self) -> dict[str, Any]:
        """The librdkafka settings: the provider's `extra` (bootstrap.servers, security.*...)."""
        settings = dict(self.extra)
        if "bootstrap.servers" not in settings and self.host:
            settings["bootstrap.servers"] = f"{self.host}:{self.port}" if self.port else self.host
        if "bootstrap.servers" not in settings:
            raise ConfigError(f"connection {self.conn_id}: no bootstrap.servers in its extra")
        return settings


def get(conn_id: str) -> Connection:
    """The connection `conn_id`: the environment first, then Airflow's backends."""
    value = os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}")
    if value is not None:
        return parse(conn_id, value)
    try:
        from airflow.sdk import Connection as AirflowConnection
    except ImportError:
        raise ConfigError(
            f"connection {conn_id}: not found (set AIRFLOW_CONN_{conn_id.upper()}, "
            "or run inside Airflow)"
        ) from None
    try:
        found = AirflowConnection.get(conn_id)
    except Exception as exc:  # Airflow raises its own not-found and no-context errors
        raise ConfigError(f"connection {conn_id}: {exc}") from exc
    return Connection(
        conn_id,
        found.conn_type or "",
        found.host,
        found.login,
        found.password,
        found.port,
        found.schema,
        dict(found.extra_dejson or {}),
    )


def parse(conn_id: str, value: str) -> Connection:
    """An AIRFLOW_CONN_ value: Airflow's JSON form, or a URI (query parameters are extra)."""
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"connection {conn_id}: not JSON: {exc.msg}") from None
        raw_extra = data.get("extra") or {}
        if isinstance(raw_extra, str):
            raw_extra = json.loads(raw_extra)
        port = data.get("port")
        return Connection(
            conn_id,
            str(data.get("conn_type", "")),
            data.get("host"),
            data.get("login"),
            data.get("password"),
            int(port) if port is not None else None,
            data.get("schema"),
            dict(raw_extra),
        )
    parts = urlsplit(text)
    if not parts.scheme:
        raise ConfigError(f"connection {conn_id}: neither JSON nor a URI")
    extra: dict[str, Any] = dict(parse_qsl(parts.query))
    if "__extra__" in extra:
        extra = json.loads(extra.pop("__extra__"))
    return Connection(
        conn_id,
        parts.scheme.replace("-", "_"),
        unquote(parts.hostname) if parts.hostname else None,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
        parts.port,
        unquote(parts.path.lstrip("/")) or None,
        extra,
    )


def fill_from(data: Any, replaces: str, fill: Callable[[Connection], dict[str, Any]]) -> Any:
    """A source config's raw mapping with `connection: ID` resolved (a model validator's job).

    `replaces` is the key the connection stands in for (giving both is an error);
    `fill` turns the connection into the keys it provides. Problems are ValueErrors,
    so that the config's error names the stage and key.
    """
    if not isinstance(data, dict) or not data.get("connection"):
        return data
    if replaces in data:
        raise ValueError(f"give '{replaces}' or 'connection', not both")
    try:
        return {**data, **fill(get(str(data["connection"])))}
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
