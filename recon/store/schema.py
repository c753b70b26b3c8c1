"""The results store's tables as SQLAlchemy Core objects (the DDL lives in sql/*.sql)."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from recon.model import COUNTERS

metadata = MetaData()
TS = DateTime(timezone=True)

runs = Table(
    "recon_runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("pipeline", Text, nullable=False),
    Column("range_start", TS, nullable=False),
    Column("range_end", TS, nullable=False),
    Column("started_at", TS, nullable=False),
    Column("finished_at", TS),
    Column("status", Text, nullable=False),
    Column("config_digest", Text, nullable=False),
    Column("recon_version", Text, nullable=False),
    Column("heartbeat_at", TS),  # version 6: when it last stored a window
    Column("data_docs", Text),  # version 8: the index of its GX Data Docs
)

windows = Table(
    "recon_windows",
    metadata,
    Column("window_id", String(36), primary_key=True),
    Column("run_id", String(36), nullable=False),
    Column("pipeline", Text, nullable=False),
    Column("window_start", TS, nullable=False),
    Column("window_end", TS, nullable=False),
    Column("status", Text, nullable=False),
    Column("events", BigInteger),
    Column("error", Text),
    Column("computed_at", TS, nullable=False),
    Column("is_latest", Boolean, nullable=False),
    Column("notes", Text),  # JSON list of strings (version 5)
)

# One column per counter, in the model's order.
COUNTER_COLUMNS = COUNTERS
stage_metrics = Table(
    "recon_stage_metrics",
    metadata,
    Column("window_id", String(36), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("stage", Text, primary_key=True),
    *(Column(name, BigInteger, nullable=False) for name in COUNTER_COLUMNS),
    Column("loss_rate", Float, nullable=False),
    Column("latency_p50_ms", Float),
    Column("latency_p95_ms", Float),
    Column("latency_p99_ms", Float),
    Column("latency_max_ms", Float),
    Column("threshold_loss_rate", Float),
    Column("threshold_max_lost", BigInteger),
    Column("breach", Boolean, nullable=False),
)

missing_events = Table(
    "recon_missing_events",
    metadata,
    Column("window_id", String(36), nullable=False),
    Column("stage", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("origin_time", TS, nullable=False),
    Column("last_stage", Text, nullable=False),
    Column("last_seen_at", TS),
    Column("last_location", Text),
)

expectation_results = Table(
    "recon_expectation_results",
    metadata,
    Column("window_id", String(36), nullable=False),
    Column("stage", Text, nullable=False),
    Column("expectation", Text, nullable=False),
    Column("column_name", Text, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("observed", Float),
    Column("success", Boolean, nullable=False),
    Column("name", Text),  # version 8: a user expectation's name
)

dead_letter_errors = Table(  # version 8
    "recon_dead_letter_errors",
    metadata,
    Column("window_id", String(36), nullable=False),
    Column("stage", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("events", BigInteger, nullable=False),
)

window_schema_ids = Table(
    "recon_window_schema_ids",
    metadata,
    Column("window_id", String(36), primary_key=True),
    Column("stage", Text, primary_key=True),
    Column("topic", Text, nullable=False),
    Column("schema_id", BigInteger, primary_key=True),
    Column("messages", BigInteger, nullable=False),
    Column("first_time", TS),
    Column("first_partition", Integer),
    Column("first_offset", BigInteger),
    Column("last_time", TS),
    Column("last_partition", Integer),
    Column("last_offset", BigInteger),
    Column("events", BigInteger, nullable=False),
    Column("next_stage", Text),
    Column("lost_next", BigInteger, nullable=False),
    Column("first_seen", Boolean),
)

schema_version = Table(
    "recon_schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", TS, nullable=False),
)

alert_state = Table(
    "recon_alert_state",
    metadata,
    Column("pipeline", Text, primary_key=True),
    Column("stage", Text, primary_key=True),
    Column("firing", Boolean, nullable=False),
    Column("opened_at", TS),
    Column("last_notified_at", TS),
    Column("resolved_at", TS),
    Column("last_window_id", String(36)),
)

alert_delivery = Table(
    "recon_alert_delivery",
    metadata,
    Column("pipeline", Text, primary_key=True),
    Column("stage", Text, primary_key=True),
    Column("route", String(80), primary_key=True),
    Column("firing", Boolean, nullable=False),
    Column("opened_at", TS),
    Column("last_notified_at", TS),
    Column("resolved_at", TS),
    Column("last_window_id", String(36)),
)
