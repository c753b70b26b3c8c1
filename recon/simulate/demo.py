"""`recon demo`: the incident recon exists for, planted into real servers and reconciled.

Twelve hours of traffic. From hour 2 to hour 10 a lake loader with a stale
schema cache drops about 30 % of events (swallowing the error, committing the
offset); dead letters trickle at ~120 a day; webhook and producer retries make
duplicates; a few events land late; a gap in the gateway's log leaves orphans;
and at the end the loader lags, so the last window has events in flight.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from recon.config import load_config
from recon.engine.runner import run
from recon.report import window_table
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan
from recon.store import ResultStore, store_url

INCIDENT_HOURS = range(2, 10)


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
    )


def demo_start(now: datetime) -> datetime:
    """The first hour of the demo's 12: its last window ended two hours before this hour.

    So every window is settled (2h) and the lagging consumer's events are still in
    flight (within the 24h stall): the last window is `incomplete`, not a loss.
    """
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=14)


def run_demo(workdir: Path, events_per_hour: int, pg_url: str, bootstrap: str) -> int:
    """Plant, write a config, reconcile, print; returns the run's exit code."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    start = demo_start(datetime.now(UTC))
    scenario = incident_scenario(start, events_per_hour)
    targets = Targets(pg_url, bootstrap, workdir / "lake", "demo_payments")
    print(
        f"planting {scenario.hours} h x {events_per_hour} events/h into {bootstrap}, "
        f"PostgreSQL and {targets.lake_path} ...",
        flush=True,
    )
    plant(plan(scenario), targets)
    config_path = workdir / "pipeline.yaml"
    config = pipeline_config(targets, results="results.sqlite")
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    cfg = load_config(config_path)
    store = ResultStore(store_url(cfg.results, workdir))
    report = run(cfg, scenario.start, scenario.end, store)
    colour = sys.stdout.isatty()
    for window in report.windows:
        print(window_table(window, colour))
    breached = [w for w in report.windows if w.status == "breach"]
    print(
        f"{len(breached)} of {len(report.windows)} windows breached; config {config_path}, "
        f"results {cfg.results}. Re-run: recon run --config {config_path} "
        f"--start {scenario.start:%Y-%m-%dT%H:%MZ} --end {scenario.end:%Y-%m-%dT%H:%MZ}"
    )
    return report.exit_code
