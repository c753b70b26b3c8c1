"""Configuration: strict validation (exit code 2, naming file and key), ${ENV}, durations."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from recon.cli import build_parser, main
from recon.config import PipelineConfig, load_config
from recon.errors import ConfigError

BASE = {
    "pipeline": "payments-events",
    "window": {"size": "1h", "grace": "30m", "settle": "2h"},
    "thresholds": {"loss_rate": 0.0001},
    "stages": [
        {
            "name": "webhook",
            "source": "sql",
            "url": "postgresql+psycopg://app:${APP_PW}@h/app",
            "table": "webhook_receipts",
            "id": "event_id",
            "time": "received_at",
        },
        {
            "name": "kafka",
            "source": "kafka",
            "bootstrap": "127.0.0.1:9092",
            "topic": "events",
            "id": "key",
            "consumer_group": "lake-loader",
        },
        {
            "name": "lake",
            "source": "parquet",
            "path": "./lake/events",
            "partitioning": "hive",
            "id": "event_id",
            "time": "ingested_at",
            "thresholds": {"max_lost": 5},
        },
    ],
    "dead_letters": [
        {
            "name": "dlq",
            "stage": "lake",
            "source": "kafka",
            "bootstrap": "127.0.0.1:9092",
            "topic": "events_dead_letter",
            "id": "header:event_id",
        },
    ],
}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_design_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_PW", "s3cret")
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.window.size == timedelta(hours=1) and cfg.window.skew == timedelta(minutes=1)
    assert "s3cret" in cfg.stages[0].url
    assert cfg.stages[2].path == str(tmp_path / "lake/events")  # relative to the config file
    assert cfg.thresholds_for("lake").model_dump(exclude_none=True) == {
        "loss_rate": 0.0001,
        "max_lost": 5,
    }
    assert cfg.thresholds_for("kafka").model_dump(exclude_none=True) == {"loss_rate": 0.0001}


def _broken(change) -> dict:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(yaml.safe_dump(BASE))
    change(data)
    return data


BAD = [
    ("unknown key", lambda d: d["stages"][1].update(topik="x"), "stages.1.kafka.topik"),
    ("missing stage field", lambda d: d["stages"][1].pop("topic"), "stages.1.kafka.topic"),
    ("unknown source kind", lambda d: d["stages"][2].update(source="s3"), "stages.2"),
    ("bad duration", lambda d: d["window"].update(grace="soon"), "window.grace"),
    ("bad threshold", lambda d: d["thresholds"].update(loss_rate=2), "thresholds.loss_rate"),
    ("unknown top-level key", lambda d: d.update(alert={}), "alert"),
    (
        "dead letter for the origin",
        lambda d: d["dead_letters"][0].update(stage="webhook"),
        "dead letter dlq",
    ),
    ("bad kafka id", lambda d: d["stages"][1].update(id="value"), "stages.1.kafka.id"),
    ("a stage named end_to_end", lambda d: d["stages"][2].update(name="end_to_end"), "reserved"),
    (
        "too little memory for DuckDB",
        lambda d: d.update(resources={"duckdb_memory": "10MB"}),
        "resources.duckdb_memory: Value error, 10MB is too little for DuckDB",
    ),
    (
        "a read budget that is no integer",
        lambda d: d.update(resources={"max_rows_per_read": "10"}),
        "resources.max_rows_per_read",
    ),
    (
        "shards written to a URL",
        lambda d: d.update(shards={"above_events": 1, "count": 2, "directory": "s3://b/x"}),
        "shards.directory",
    ),
    (
        "shards written nowhere",
        lambda d: d.update(shards={"above_events": 1, "count": 2, "directory": ""}),
        "shards.directory",
    ),
]


@pytest.mark.parametrize(("why", "change", "names"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_exits_2_naming_file_and_key(
    tmp_path: Path, monkeypatch, capsys, why, change, names
) -> None:
    monkeypatch.setenv("APP_PW", "pw")
    path = _write(tmp_path, _broken(change))
    code = main(
        ["run", "--config", str(path), "--start", "2026-11-20T00:00Z", "--end", "2026-11-20T01:00Z"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert str(path) in err and names in err


def test_missing_env_variable_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("APP_PW", raising=False)
    with pytest.raises(ConfigError, match="APP_PW"):
        load_config(_write(tmp_path, BASE))


def test_bad_usage_exits_2(capsys) -> None:
    assert main(["run", "--config", "x.yaml", "--start", "yesterday", "--end", "now"]) == 2
    assert main(["frobnicate"]) == 2


def test_cli_and_config_do_not_drift() -> None:
    """Every `recon run` option is a run-time choice, not a pipeline setting in disguise."""
    subcommands = next(a for a in build_parser()._actions if a.dest == "command")
    run = subcommands.choices["run"]
    options = {a.dest for a in run._actions} - {"help"}
    assert options == {
        "config",
        "start",
        "end",
        "json",
        "jobs",
        "no_store",
        "timings",
        "now",
        "quiet",
    }
    assert not options & set(PipelineConfig.model_fields)


def test_committed_suite_matches_the_example_config() -> None:
    """expectations/payments-events.json is what examples/pipeline.yaml's thresholds give."""
    from recon.checks.expectations import ensure_suite, suite_spec

    cfg = load_config(Path(__file__).parent.parent / "examples" / "pipeline.yaml")
    assert ensure_suite(cfg) == json.loads(json.dumps(suite_spec(cfg)))


def test_suite_that_disagrees_with_the_config_stops_the_run(tmp_path: Path, monkeypatch) -> None:
    """The suite was generated at loss_rate 0.0001; the config now says 0.01: exit code 2."""
    from recon.checks.expectations import ensure_suite

    monkeypatch.setenv("APP_PW", "pw")
    ensure_suite(load_config(_write(tmp_path, BASE)))
    loosened = _broken(lambda d: d["thresholds"].update(loss_rate=0.01))
    with pytest.raises(ConfigError, match="differ from the config") as info:
        ensure_suite(load_config(_write(tmp_path, loosened)))
    assert info.value.exit_code == 2


def test_default_results_store_is_beside_the_config(tmp_path: Path, monkeypatch) -> None:
    """No `results`: the CLI, the notebook API and the DAG all use the SQLite file beside the
    config, whatever the working directory (the API used the notebook's directory)."""
    from recon.store import store_url

    monkeypatch.setenv("APP_PW", "pw")
    data = _broken(lambda d: d.pop("results", None))
    path = _write(tmp_path, data)
    monkeypatch.chdir(Path("/"))
    cfg = load_config(path)
    assert cfg.results == str(tmp_path / "recon-results.sqlite")
    assert store_url(cfg.results, Path.cwd()) == f"sqlite:///{tmp_path / 'recon-results.sqlite'}"
