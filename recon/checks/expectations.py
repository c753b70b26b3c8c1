"""The expectations gate: a Great Expectations suite per pipeline, kept in `expectations/`.

The suite is generated from the configured thresholds (global, per stage,
end to end). A suite file that disagrees with the config is a configuration
error rather than a silent override in either direction. One validation runs
over the metrics of all windows of a run; its failures decide `breach`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from recon.config import PipelineConfig
from recon.errors import ConfigError
from recon.model import END_TO_END, ExpectationOutcome, WindowResult

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

_CHECKS = (("loss_rate", "loss_rate"), ("max_lost", "lost"))
# The origin's volume against its floor: events - min_events of the window (a floor can
# differ per time of day, so the frame carries it per row and the expectation is >= 0).
_FLOOR = "events_over_floor"


def _expectation(stage: str, key: str, column: str, **bounds: float) -> dict[str, Any]:
    return {
        "type": "expect_column_values_to_be_between",
        "kwargs": {
            "column": column,
            **bounds,
            # GX's serialized Condition: Column("stage") == stage
            "row_condition": {
                "type": "comparison",
                "column": {"name": "stage"},
                "operator": "==",
                "parameter": stage,
            },
        },
        "meta": {"stage": stage, "threshold": key},
    }


def suite_spec(cfg: PipelineConfig) -> dict[str, Any]:
    """The suite, as GX's JSON, for the configured thresholds.

    Per hop and end to end: loss_rate and max_lost. Per stage, the origin too:
    max_unreadable_rate (a window whose ledgers cannot be read is never ok).
    The origin: min_events when configured.
    """
    expectations = []
    for stage in [*(s.name for s in cfg.stages[1:]), END_TO_END]:
        th = cfg.thresholds_for(stage)
        for key, column in _CHECKS:
            limit = getattr(th, key)
            if limit is not None:
                expectations.append(_expectation(stage, key, column, max_value=limit))
    for stage_cfg in cfg.stages:
        limit = cfg.max_unreadable_rate(stage_cfg.name)
        expectations.append(
            _expectation(stage_cfg.name, "max_unreadable_rate", "unreadable_rate", max_value=limit)
        )
    if cfg.thresholds.min_events is not None:
        expectations.append(_expectation(cfg.origin.name, "min_events", _FLOOR, min_value=0))
    return {
        "name": f"recon.{cfg.pipeline}",
        "expectations": expectations,
        "meta": {"generated_by": "recon from the pipeline config's thresholds"},
    }


def _comparable(spec: dict[str, Any]) -> list[tuple[Any, ...]]:
    out = []
    for e in spec.get("expectations", []):
        kwargs = e.get("kwargs", {})
        bounds = tuple(
            float(kwargs[b]) if kwargs.get(b) is not None else None
            for b in ("min_value", "max_value")
        )
        stage = (e.get("meta") or {}).get("stage")
        out.append((e.get("type"), kwargs.get("column"), bounds, stage))
    return sorted(out, key=repr)


def suite_path(cfg: PipelineConfig) -> Path:
    """Where the pipeline's suite lives."""
    return Path(cfg.expectations or "expectations") / f"{cfg.pipeline}.json"


def ensure_suite(cfg: PipelineConfig, write: bool = False) -> dict[str, Any]:
    """The suite to validate with: written if absent (or `write`), checked if present."""
    path = suite_path(cfg)
    spec = suite_spec(cfg)
    if path.exists() and not write:
        try:
            stored: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable expectation suite: {exc}") from None
        if _comparable(stored) != _comparable(spec):
            raise ConfigError(
                f"{path}: its thresholds differ from the config's; review it, then run "
                f"`recon expectations --config ... --write` to regenerate it"
            )
        return stored
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(spec, indent=2) + "\n")
        tmp.replace(path)
    except OSError as exc:  # `expectations:` names a file, or a directory recon cannot write
        raise ConfigError(f"expectations: cannot write the suite {path}: {exc}") from None
    return spec


def metrics_frame(results: list[WindowResult], cfg: PipelineConfig) -> pd.DataFrame:
    """One row per (window, stage) with a number, and end to end.

    The origin's row has no hop (loss 0) but its unreadable rate and its volume
    against the window's floor (`events_over_floor`, None without a floor).
    """
    rows = []
    for r in results:
        if r.error is not None or r.end_to_end is None:
            continue
        floor = cfg.min_events(r.window.start)
        for m in [*r.stages, r.end_to_end]:
            origin = m is r.stages[0]
            rows.append(
                {
                    "window": r.window.start.isoformat(),
                    "stage": m.stage,
                    "loss_rate": m.loss_rate,
                    "lost": m.lost,
                    "unreadable_rate": m.unreadable_rate,
                    "events": r.events,
                    "min_events": floor if origin else None,
                    _FLOOR: (r.events or 0) - floor if origin and floor is not None else None,
                }
            )
    columns = ["window", "stage", "loss_rate", "lost", "unreadable_rate", "events"]
    return pd.DataFrame(rows, columns=[*columns, "min_events", _FLOOR])


def validate(spec: dict[str, Any], results: list[WindowResult], cfg: PipelineConfig) -> None:
    """Run the suite over every window's metrics; record outcomes and set `breach` flags."""
    frame = metrics_frame(results, cfg)
    if frame.empty or not spec.get("expectations"):
        return
    outcome = _run_gx(spec, frame)
    by_window = {r.window.start.isoformat(): r for r in results}
    for exp, failed_rows in outcome:
        stage, column = exp["meta"]["stage"], exp["kwargs"]["column"]
        rows = frame[(frame["stage"] == stage) & frame[column].notna()]
        for index, row in rows.iterrows():  # a few rows per window: not the data path
            result = by_window[row["window"]]
            success = index not in failed_rows
            if column == _FLOOR:
                observed, limit = float(row["events"]), float(row["min_events"])
                column_name = "events"
            else:
                observed, limit = float(row[column]), float(exp["kwargs"]["max_value"])
                column_name = column
            result.expectations.append(
                ExpectationOutcome(stage, exp["type"], column_name, limit, observed, success)
            )
            if not success:
                metric = next(
                    m
                    for m in [*result.stages, result.end_to_end]
                    if m is not None and m.stage == stage
                )
                metric.breach = True


@functools.cache
def _batch_definition() -> Any:
    """One ephemeral GX context per process (creating one costs more than validating)."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return (
        context.data_sources.add_pandas("recon")
        .add_dataframe_asset("stage_metrics")
        .add_batch_definition_whole_dataframe("run")
    )


def _run_gx(spec: dict[str, Any], frame: pd.DataFrame) -> list[tuple[dict[str, Any], set[int]]]:
    """Validate with GX; per expectation, the frame indices that failed it."""
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
    import great_expectations as gx

    suite = gx.ExpectationSuite(
        name=spec["name"],
        expectations=[
            {"type": e["type"], "kwargs": e["kwargs"], "meta": e.get("meta", {})}
            for e in spec["expectations"]
        ],
    )
    validation = batch.validate(suite, result_format="COMPLETE")
    outcome = []
    for res in validation.results:
        if _raised(res.exception_info):
            # An expectation that could not run must not read as "no breach".
            raise RuntimeError(
                f"expectation {res.expectation_config} failed to run: {res.exception_info}"
            )
        exp = next(e for e in spec["expectations"] if e["meta"] == res.expectation_config.meta)
        outcome.append((exp, set(res.result.get("unexpected_index_list") or [])))
    return outcome


def _raised(info: Any) -> bool:
    if isinstance(info, dict):
        return bool(info.get("raised_exception")) or any(_raised(v) for v in info.values())
    return False
