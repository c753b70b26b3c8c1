"""`recon demo`: the incident recon exists for, planted into real servers and reconciled.

Twelve hours of traffic, Avro in Confluent wire format on Kafka. At hour 2 the
producer moves to a new version of the value schema; from then to hour 10 a
lake loader with a stale schema cache drops about 30 % of events (those its
instances with the stale cache read: swallowing the error, committing the
offset), and recon names the new schema ID where the loss begins. Dead letters
trickle at ~120 a day; webhook and producer retries make duplicates; a few
events land late; a gap in the gateway's log leaves orphans; and at the end
the loader lags, so the last window has events in flight.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import yaml
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from recon.checks.expectations import ensure_suite, suite_path
from recon.config import PipelineConfig, load_config
from recon.engine.runner import run
from recon.errors import ConfigError, SourceError
from recon.model import Status
from recon.report import causes, window_table
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan
from recon.sources.sql import conninfo
from recon.store import ResultStore, store_url

INCIDENT_HOURS = range(2, 10)
# scripts/services.sh starts Apicurio Registry here (its Confluent-compatible API).
DEFAULT_REGISTRY = os.environ.get("RECON_SCHEMA_REGISTRY", "http://127.0.0.1:8081/apis/ccompat/v7")


def incident_scenario(start: datetime, events_per_hour: int) -> Scenario:
    """The incident's day, compressed to 12 hours."""
    return Scenario(
        start=start,
        hours=12,
        events_per_hour=events_per_hour,
        partitions=6,
        seed=2024,
        kafka_loss=0.00004,  # real broker failures: ~0.004 %, under the 0.01 % threshold
        lake_loss=lambda hour: 0.302 if hour in INCIDENT_HOURS else 0.0,
        dead_letters_per_hour=5,  # ~120 a day
        webhook_retries=0.002,
        producer_duplicates=0.001,
        lake_duplicates=0.0005,
        late_per_hour=3,
        orphans_per_hour=1,
        lag_from=start + timedelta(hours=11, minutes=50),
        schema_switch=timedelta(hours=INCIDENT_HOURS.start),
    )


def _at_most(name: str, stage: str, column: str, limit: float) -> dict[str, object]:
    return {
        "type": "expect_column_values_to_be_between",
        "kwargs": {
            "column": column,
            "max_value": limit,
            "row_condition": {
                "type": "comparison",
                "column": {"name": "stage"},
                "operator": "==",
                "parameter": stage,
            },
        },
        "meta": {"name": name},
    }


# The checks the team added after the incident, beside recon's: dead letters had been
# trickling at ~120 a day (at most 200 a day: 8 in an hourly window), and the producer's
# p99 latency came back from 4.2 s to 1.1 s (at most 2,000 ms).
DEMO_EXPECTATIONS = [
    _at_most("dead letters at most 200 a day (8 an hour)", "lake", "dead_lettered", 8),
    _at_most("producer p99 latency at most 2,000 ms", "kafka", "latency_p99_ms", 2000),
]


def write_suite(cfg: PipelineConfig) -> None:
    """The demo's suite: its two expectations of the user's, then recon's from the thresholds."""
    path = suite_path(cfg)
    assert path is not None  # a config loaded from a file has its directory
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"name": f"recon.{cfg.pipeline}", "expectations": DEMO_EXPECTATIONS})
    )
    ensure_suite(cfg, write=True)


def demo_start(now: datetime) -> datetime:
    """The first hour of the demo's 12: its last window ended two hours before this hour.

    So every window is settled (2h) and the lagging consumer's events are still in
    flight (within the 24h stall): the last window is `incomplete`, not a loss.
    """
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=14)


# Marks the receipts table (its comment) of a demo: only such a demo is ever replaced.
MARK = "planted by recon demo"


def claim(targets: Targets) -> None:
    """Refuse to replace anything `recon demo` did not create under this name.

    Its receipts table carries MARK as its comment; a table of that name without
    it, or the demo's topics without that table, belong to someone else.
    """
    with psycopg.connect(conninfo(targets.pg_url)) as conn:
        row = conn.execute(
            "SELECT obj_description(to_regclass(%s), 'pg_class'), to_regclass(%s) IS NOT NULL",
            (targets.receipts_table, targets.receipts_table),
        ).fetchone()
    comment, table_exists = row if row else (None, False)
    if table_exists and comment != MARK:
        raise ConfigError(
            f"table {targets.receipts_table} exists and was not planted by recon demo: "
            "choose another --name"
        )
    admin = AdminClient({"bootstrap.servers": targets.bootstrap})
    try:
        topics = admin.list_topics(timeout=30).topics
    except KafkaException as exc:
        raise SourceError(f"kafka @ {targets.bootstrap}: {exc.args[0]}") from exc
    taken = sorted({targets.topic, targets.dead_letter_topic} & set(topics))
    if taken and not table_exists:
        raise ConfigError(
            f"topics {taken} exist and were not planted by recon demo: choose another --name"
        )


def mark(targets: Targets) -> None:
    """Sign the receipts table as the demo's own."""
    with psycopg.connect(conninfo(targets.pg_url)) as conn:
        conn.execute(
            psycopg.sql.SQL("COMMENT ON TABLE {} IS {}").format(
                psycopg.sql.Identifier(targets.receipts_table), psycopg.sql.Literal(MARK)
            )
        )


def run_demo(
    workdir: Path,
    events_per_hour: int,
    pg_url: str,
    bootstrap: str,
    name: str = "demo_payments",
    registry: str = DEFAULT_REGISTRY,
) -> int:
    """Plant, write a config, reconcile, print; returns the run's exit code."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    start = demo_start(datetime.now(UTC))
    scenario = incident_scenario(start, events_per_hour)
    targets = Targets(pg_url, bootstrap, workdir / "lake", name, registry)
    claim(targets)
    print(
        f"planting {scenario.hours} h x {events_per_hour} events/h into {bootstrap}, "
        f"PostgreSQL and {targets.lake_path} (Avro values, schemas in {registry}) ...",
        flush=True,
    )
    plant(plan(scenario), targets)
    mark(targets)
    config_path = workdir / "pipeline.yaml"
    config = pipeline_config(targets, results="results.sqlite")
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    cfg = load_config(config_path)
    write_suite(cfg)
    store = ResultStore(store_url(cfg.results, workdir))
    report = run(cfg, scenario.start, scenario.end, store)
    colour = sys.stdout.isatty()
    for window in report.windows:
        print(window_table(window, colour))
    breached = [w for w in report.windows if w.status == Status.BREACH]
    for window, text in causes(report.windows):
        print(f"cause: {window.window}: {text}")
    print(
        f"{len(breached)} of {len(report.windows)} windows breached; config {config_path}, "
        f"results {cfg.results}. Re-run: recon run --config {config_path} "
        f"--start {scenario.start:%Y-%m-%dT%H:%MZ} --end {scenario.end:%Y-%m-%dT%H:%MZ}"
    )
    return report.exit_code
