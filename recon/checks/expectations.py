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

from recon.config import END_TO_END, PipelineConfig
from recon.errors import ConfigError
from recon.model import ExpectationOutcome, WindowResult

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

_CHECKS = (("loss_rate", "loss_rate"), ("max_lost", "lost"))


def suite_spec(cfg: PipelineConfig) -> dict[str, Any]:
    """The suite, as GX's JSON, for the configured thresholds."""
    expectations = []
    for stage in [*(s.name for s in cfg.stages[1:]), END_TO_END]:
        th = cfg.thresholds if stage == END_TO_END else cfg.thresholds_for(stage)
        for key, column in _CHECKS:
            limit = getattr(th, key)
            if limit is None:
                continue
            expectations.append(
                {
                    "type": "expect_column_values_to_be_between",
                    "kwargs": {
                        "column": column,
                        "max_value": limit,
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
            )
    return {
        "name": f"recon.{cfg.pipeline}",
        "expectations": expectations,
        "meta": {"generated_by": "recon from the pipeline config's thresholds"},
    }


def _comparable(spec: dict[str, Any]) -> list[tuple[Any, ...]]:
    out = []
    for e in spec.get("expectations", []):
        kwargs = e.get("kwargs", {})
        out.append(
            (
                e.get("type"),
                kwargs.get("column"),
                float(kwargs.get("max_value")),
                (e.get("meta") or {}).get("stage"),
            )
        )
    return sorted(out)


def suite_path(cfg: PipelineConfig) -> Path:
    """Where the pipeline's suite lives."""
    return Path(cfg.expectations or "expectations") / f"{cfg.pipeline}.json"


def ensure_suite(cfg: PipelineConfig, write: bool = False) -> dict[str, Any]:
    """The suite to validate with: written if absent (or `write`), checked if present."""
    path = suite_path(cfg)
    spec = suite_spec(cfg)
    if path.exists() and not write:
        try:
            stored = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: unreadable expectation suite: {exc}") from None
        if _comparable(stored) != _comparable(spec):
            raise ConfigError(
                f"{path}: its thresholds differ from the config's; review it, then run "
                f"`recon expectations --config ... --write` to regenerate it"
            )
        return stored
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(spec, indent=2) + "\n")
    tmp.replace(path)
    return spec


def metrics_frame(results: list[WindowResult]) -> pd.DataFrame:
    """One row per (window, stage) with a number, origin excluded (it has no hop)."""
    rows = []
    for r in results:
        if r.error is not None or r.end_to_end is None:
            continue
        for m in [*r.stages[1:], r.end_to_end]:
            rows.append(
                {
                    "window": r.window.start.isoformat(),
                    "stage": m.stage,
                    "loss_rate": m.loss_rate,
                    "lost": m.lost,
                }
            )
    return pd.DataFrame(rows, columns=["window", "stage", "loss_rate", "lost"])


def validate(spec: dict[str, Any], results: list[WindowResult]) -> None:
    """Run the suite over every window's metrics; record outcomes and set `breach` flags."""
    frame = metrics_frame(results)
    if frame.empty or not spec.get("expectations"):
        return
    outcome = _run_gx(spec, frame)
    by_window = {r.window.start.isoformat(): r for r in results}
    for exp, failed_rows in outcome:
        stage, column = exp["meta"]["stage"], exp["kwargs"]["column"]
        limit = float(exp["kwargs"]["max_value"])
        for index, row in frame[frame["stage"] == stage].iterrows():
            result = by_window[row["window"]]
            success = index not in failed_rows
            result.expectations.append(
                ExpectationOutcome(stage, exp["type"], column, limit, float(row[column]), success)
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
