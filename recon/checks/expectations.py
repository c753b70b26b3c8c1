"""The expectations gate: a Great Expectations suite per pipeline, kept in `expectations/`.

The suite holds two kinds of expectation. Recon's own, marked
`meta: {"recon": "generated"}`, come from the configured thresholds (global,
per stage, end to end): one that disagrees with the config is a configuration
error rather than a silent override in either direction, and `recon
expectations --write` regenerates only them. Every other expectation is the
user's: kept as written and validated beside recon's.

Every expectation sees the metrics table (`metrics_frame`): one row per stage
of a window and one for end to end. An expectation that judges rows (GX's map
expectations: `expect_column_values_to_...`) judges each row; one that judges
a whole table (`expect_column_max_...`, `..._sum_...`) judges one window's
rows at a time. A failed expectation makes its window a breach.

Validation runs through a GX Checkpoint per gated batch of windows; its
results build GX's Data Docs once per run (`Gate.build_docs`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import numbers
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from recon.config import PipelineConfig
from recon.errors import ConfigError
from recon.model import COUNTERS, END_TO_END, Computed, ExpectationOutcome, Window

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

GENERATED = "generated"  # meta.recon of the expectations recon writes from thresholds
ALL_STAGES = "*"  # the stage of an outcome that judged a window's rows of every stage
_CHECKS = (("loss_rate", "loss_rate"), ("max_lost", "lost"))
# The origin's volume against its floor: events - min_events of the window (a floor can
# differ per time of day, so the frame carries it per row and the expectation is >= 0).
_FLOOR = "events_over_floor"
_LATENCY = tuple(f"latency_{k}_ms" for k in ("p50", "p95", "p99", "max"))
# The metrics table's columns, in order (docs/configuration.md lists them).
COLUMNS = (
    "window",
    "stage",
    *COUNTERS,
    "loss_rate",
    "unreadable_rate",
    "duplicate_rate",
    *_LATENCY,
    "events",
    "min_events",
    _FLOOR,
)


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
        "meta": {"recon": GENERATED, "stage": stage, "threshold": key},
    }


def suite_spec(cfg: PipelineConfig) -> dict[str, Any]:
    """The generated part of the suite, as GX's JSON, for the configured thresholds.

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
        "meta": {
            "generated_by": "recon from the pipeline config's thresholds (meta.recon: "
            "generated); every other expectation is the user's and is kept"
        },
    }


def is_generated(expectation: dict[str, Any]) -> bool:
    """Whether recon wrote it from the thresholds (suites before the marker: stage + threshold)."""
    meta = expectation.get("meta") or {}
    return meta.get("recon") == GENERATED or (
        "recon" not in meta and set(meta) == {"stage", "threshold"}
    )


def _comparable(expectations: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    out = []
    for e in expectations:
        kwargs = e.get("kwargs", {})
        bounds = tuple(
            float(kwargs[b]) if kwargs.get(b) is not None else None
            for b in ("min_value", "max_value")
        )
        stage = (e.get("meta") or {}).get("stage")
        out.append((e.get("type"), kwargs.get("column"), bounds, stage))
    return sorted(out, key=repr)


def suite_path(cfg: PipelineConfig) -> Path | None:
    """Where the pipeline's suite lives; None for a config without a directory for it.

    A config loaded from a file always has one (`expectations/` beside it); one built
    in code without `expectations` has none, and never writes into the working directory.
    """
    if cfg.expectations is None:
        return None
    return Path(cfg.expectations) / f"{cfg.pipeline}.json"


def ensure_suite(cfg: PipelineConfig, write: bool = False) -> dict[str, Any]:
    """The suite to validate with: written if absent (or `write`), checked if present.

    `write` regenerates recon's expectations and keeps the user's; a suite of the
    user's only gets recon's added. Without a suite path the generated suite is
    returned, and nothing is written.
    """
    path = suite_path(cfg)
    spec = suite_spec(cfg)
    if path is None:
        if write:
            raise ConfigError("expectations: this config names no directory to write a suite to")
        return spec
    stored = _read(path) if path.exists() else None
    user = [e for e in stored["expectations"] if not is_generated(e)] if stored else []
    if user:
        _check_user(path, user, {*(s.name for s in cfg.stages), END_TO_END})
    generated = [e for e in stored["expectations"] if is_generated(e)] if stored else []
    # A suite of the user's expectations only gets recon's added; one whose own differ
    # from the config's (edited, or some removed) stops the run.
    if stored is not None and generated and not write:
        if _comparable(generated) != _comparable(spec["expectations"]):
            raise ConfigError(
                f"{path}: its thresholds differ from the config's; review it, then run "
                f"`recon expectations --config ... --write` to regenerate recon's "
                f"expectations (yours are kept)"
            )
        return stored
    merged = {**spec, "expectations": [*spec["expectations"], *user]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(merged, indent=2) + "\n")
        tmp.replace(path)
    except OSError as exc:  # `expectations:` names a file, or a directory recon cannot write
        raise ConfigError(f"expectations: cannot write the suite {path}: {exc}") from None
    return merged


def _read(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable expectation suite: {exc}") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("expectations"), list):
        raise ConfigError(f"{path}: not an expectation suite (no list of expectations)")
    bad = [i for i, e in enumerate(stored["expectations"]) if not _shaped(e)]
    if bad:
        raise ConfigError(
            f"{path}: expectation {bad[0]} needs a `type` and `kwargs` (and an optional `meta`)"
        )
    return stored


def _shaped(e: Any) -> bool:
    return (
        isinstance(e, dict)
        and isinstance(e.get("type"), str)
        and isinstance(e.get("kwargs", {}), dict)
        and isinstance(e.get("meta") or {}, dict)
    )


def _check_user(path: Path, user: list[dict[str, Any]], stages: set[str]) -> None:
    """Each user expectation is one GX knows, with arguments it takes, about a real stage.

    GX refuses bad arguments, but drops an expectation whose type it does not
    know with a log line only; and a row condition on a stage the pipeline does
    not have would pass forever.
    """
    gx, _ = _gx()
    for e in user:
        try:
            built = gx.ExpectationSuite(name="check", expectations=[_gx_json(e)]).expectations
        except (gx.exceptions.InvalidExpectationConfigurationError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: expectation {name_of(e)}: {exc}") from None
        if len(built) != 1:
            raise ConfigError(
                f"{path}: expectation {name_of(e)}: Great Expectations has no type {e['type']!r}"
            )
        stage = _stage_of(e)
        if stage != ALL_STAGES and stage not in stages:
            raise ConfigError(
                f"{path}: expectation {name_of(e)}: no stage {stage!r} in this pipeline "
                f"(stages: {', '.join(sorted(stages))})"
            )


def name_of(e: dict[str, Any]) -> str:
    """A user expectation's name: its meta.name, else its type, column and bounds."""
    meta = e.get("meta") or {}
    if meta.get("name"):
        return str(meta["name"])
    kwargs = e.get("kwargs", {})
    args = [str(kwargs[k]) for k in ("column", "column_A", "column_B") if k in kwargs]
    args += [
        f"{b.removesuffix('_value')} {kwargs[b]:g}"
        if isinstance(kwargs[b], int | float)
        else f"{b} {kwargs[b]}"
        for b in ("min_value", "max_value", "value")
        if kwargs.get(b) is not None
    ]
    return f"{e['type']}({', '.join(args)})"


def _gx_json(e: dict[str, Any]) -> dict[str, Any]:
    return {"type": e["type"], "kwargs": e.get("kwargs", {}), "meta": e.get("meta") or {}}


def metrics_frame(computed: list[Computed], cfg: PipelineConfig) -> pd.DataFrame:
    """The metrics table: one row per (window, stage) with numbers, and end to end.

    The origin's row has no hop (loss 0) but its unreadable rate and its volume
    against the window's floor (`events_over_floor`, None without a floor).
    `duplicate_rate` is duplicates / arrived (0 when nothing arrived).
    """
    rows = []
    for r in computed:
        if r.error is not None or r.end_to_end is None:
            continue
        floor = cfg.min_events(r.window.start)
        for m in [*r.stages, r.end_to_end]:
            origin = m is r.stages[0]
            rows.append(
                {
                    "window": r.window.start.isoformat(),
                    "stage": m.stage,
                    **{c: getattr(m, c) for c in COUNTERS},
                    "loss_rate": m.loss_rate,
                    "unreadable_rate": m.unreadable_rate,
                    "duplicate_rate": m.duplicates / m.arrived if m.arrived else 0.0,
                    **{f"latency_{k}_ms": v for k, v in m.latency_ms.items()},
                    "events": r.events,
                    "min_events": floor if origin else None,
                    _FLOOR: (r.events or 0) - floor if origin and floor is not None else None,
                }
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))


@dataclass
class _Part:
    """One checkpoint of the run: its spec entries in the order of its GX suite."""

    entries: list[dict[str, Any]]
    checkpoint: Any
    names: tuple[str, str, str]  # suite, validation definition, checkpoint


class Gate:
    """The run's suite as GX Checkpoints; `__call__` returns each window's outcomes.

    Expectations that judge rows are validated in one batch over all the windows
    given; the others once per window. GX is imported when the first window is
    gated. The validations of the run become its Data Docs (`build_docs`).
    """

    def __init__(self, cfg: PipelineConfig, suite: dict[str, Any], run_id: str) -> None:
        self.cfg, self.suite, self.run_id = cfg, suite, run_id
        self.parts: tuple[_Part | None, _Part | None] | None = None
        self.maps: set[int] = set()  # id() of the suite's entries that judge rows
        self.validated: list[Any] = []  # GX's ValidationResultIdentifiers, for the docs

    def __call__(self, computed: list[Computed]) -> dict[Window, list[ExpectationOutcome]]:
        """The outcomes of every expectation on every window (none for an error window)."""
        frame = metrics_frame(computed, self.cfg)
        outcomes: dict[Window, list[ExpectationOutcome]] = {c.window: [] for c in computed}
        if frame.empty or not self.suite["expectations"]:
            return outcomes
        rows, tables = self._parts()
        by_start = {c.window.start.isoformat(): c.window for c in computed}
        if rows is not None:
            for exp, res in self._run(rows, frame):
                for start, window_rows in frame.groupby("window", sort=False):
                    outcomes[by_start[str(start)]] += _row_outcomes(exp, window_rows, res.result)
        if tables is not None:
            for start, window_rows in frame.groupby("window", sort=False):
                mine = window_rows.reset_index(drop=True)
                for exp, res in self._run(tables, mine):
                    if id(exp) in self.maps:  # judges rows, `mostly` of them: GX decides
                        failed = {} if res.success else res.result
                        outcomes[by_start[str(start)]] += _row_outcomes(exp, mine, failed)
                    else:
                        outcomes[by_start[str(start)]].append(_table_outcome(exp, res))
        return outcomes

    def _parts(self) -> tuple[_Part | None, _Part | None]:
        if self.parts is None:
            gx, is_map = _gx()
            built = gx.ExpectationSuite(
                name="kinds", expectations=[_gx_json(e) for e in self.suite["expectations"]]
            ).expectations  # in the order given
            judged = list(zip(self.suite["expectations"], map(is_map, built), strict=True))
            self.maps = {id(e) for e, m in judged if m}
            # `mostly` is a share of a window's rows: such an expectation is validated
            # per window, like those that judge a whole table.
            batch = [e for e, m in judged if m and not _mostly(e)]
            self.parts = (
                self._part("rows", batch),
                self._part(
                    "per_window",
                    [e for e in self.suite["expectations"] if id(e) not in {id(b) for b in batch}],
                ),
            )
        return self.parts

    def _part(self, kind: str, entries: list[dict[str, Any]]) -> _Part | None:
        if not entries:
            return None
        gx, _ = _gx()
        context, batch = _context()
        tag = f"{self.suite['name']}.{kind}.{self.run_id[:8]}"
        names = (tag, f"validate {tag}", f"checkpoint {tag}")
        with _LOCK:  # one context per process, shared by runs in threads
            suite = context.suites.add(
                gx.ExpectationSuite(name=names[0], expectations=[_gx_json(e) for e in entries])
            )
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=names[1], data=batch, suite=suite)
            )
            checkpoint = context.checkpoints.add(
                gx.Checkpoint(
                    name=names[2],
                    validation_definitions=[definition],
                    result_format="COMPLETE",
                    actions=[],
                )
            )
        return _Part(entries, checkpoint, names)

    def _run(self, part: _Part, frame: pd.DataFrame) -> list[tuple[dict[str, Any], Any]]:
        """Run the part's checkpoint over `frame`: (spec entry, GX's result) per expectation."""
        from great_expectations.core.run_identifier import RunIdentifier

        result = part.checkpoint.run(
            batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=self.run_id)
        )
        self.validated += list(result.run_results)
        ((validation),) = result.run_results.values()
        order = {
            e.id: i
            for i, e in enumerate(part.checkpoint.validation_definitions[0].suite.expectations)
        }
        out = []
        for res in validation.results:
            exp = part.entries[order[res.expectation_config.id]]
            if _raised(res.exception_info):
                if is_generated(exp):  # recon's own: a bug, never "no breach"
                    raise RuntimeError(
                        f"expectation {res.expectation_config} failed to run: {res.exception_info}"
                    )
                raise ConfigError(
                    f"expectation {name_of(exp)} cannot run on the metrics table: "
                    f"{_message(res.exception_info)}"
                )
            out.append((exp, res))
        return out

    def build_docs(self, directory: Path | None) -> Path | None:
        """GX's Data Docs of this run's validations in `directory`; its index page.

        Then the run's suites, checkpoints and results leave the shared GX context.
        """
        if self.parts is None:
            return None
        context, _ = _context()
        index = None
        try:
            if directory is not None and self.validated:
                index = self._build(context, directory)
        finally:
            self._forget(context)
        return index

    def _build(self, context: Any, directory: Path) -> Path:
        site = f"recon {self.run_id}"
        with _LOCK:
            context.add_data_docs_site(
                site,
                {
                    "class_name": "SiteBuilder",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": str(directory),
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
            try:
                context.build_data_docs(site_names=[site], resource_identifiers=self.validated)
            finally:
                context.delete_data_docs_site(site)
        return directory / "index.html"

    def _forget(self, context: Any) -> None:
        with _LOCK:
            for part in self.parts or ():
                if part is None:
                    continue
                context.checkpoints.delete(part.names[2])
                context.validation_definitions.delete(part.names[1])
                context.suites.delete(part.names[0])
            for key in self.validated:
                context.validation_results_store.remove_key(key)
        self.validated = []


def _row_outcomes(
    exp: dict[str, Any], rows: pd.DataFrame, failed: dict[str, Any]
) -> list[ExpectationOutcome]:
    """A row expectation's outcomes on one window's rows."""
    bad = set(failed.get("unexpected_index_list") or [])
    kwargs, meta = exp["kwargs"], exp.get("meta") or {}
    column = str(kwargs.get("column", ""))
    if is_generated(exp):
        mine = rows[(rows["stage"] == meta["stage"]) & rows[column].notna()]
        out = []
        for index, row in mine.iterrows():  # a few rows per window: not the data path
            if column == _FLOOR:
                observed, limit, shown = float(row["events"]), float(row["min_events"]), "events"
            else:
                observed, limit, shown = float(row[column]), float(kwargs["max_value"]), column
            out.append(
                ExpectationOutcome(
                    meta["stage"], exp["type"], shown, limit, observed, index not in bad
                )
            )
        return out
    name, limit = name_of(exp), _bound(kwargs)
    failing = rows[rows.index.isin(bad)]
    if not failing.empty:
        return [
            ExpectationOutcome(
                str(row["stage"]), exp["type"], column, limit, _number(row.get(column)), False, name
            )
            for _, row in failing.iterrows()
        ]
    stage = _stage_of(exp)
    one = rows[rows["stage"] == stage]
    seen = _number(one[column].iloc[0]) if len(one) == 1 and column in one else None
    return [ExpectationOutcome(stage, exp["type"], column, limit, seen, True, name)]


def _table_outcome(exp: dict[str, Any], res: Any) -> ExpectationOutcome:
    """A whole-table expectation's outcome on one window's rows (`res`: GX's result)."""
    kwargs = exp["kwargs"]
    observed = _number(res.result.get("observed_value"))
    column = str(kwargs.get("column", ""))
    return ExpectationOutcome(
        _stage_of(exp),
        exp["type"],
        column,
        _bound(kwargs),
        observed,
        bool(res.success),
        name_of(exp),
    )


def _mostly(exp: dict[str, Any]) -> bool:
    """Whether an expectation passes with only `mostly` of its rows passing."""
    mostly = exp["kwargs"].get("mostly")
    return mostly is not None and mostly != 1


def _stage_of(exp: dict[str, Any]) -> str:
    """The stage an expectation is about: meta.stage, its row condition's, or every stage."""
    meta = exp.get("meta") or {}
    if meta.get("stage"):
        return str(meta["stage"])
    cond = exp["kwargs"].get("row_condition")
    if (
        isinstance(cond, dict)
        and cond.get("type") == "comparison"
        and (cond.get("column") or {}).get("name") == "stage"
        and cond.get("operator") == "=="
    ):
        return str(cond.get("parameter"))
    return ALL_STAGES


def _bound(kwargs: dict[str, Any]) -> float:
    for key in ("max_value", "min_value", "value"):
        value = _number(kwargs.get(key))
        if value is not None:
            return value
    return 0.0


def _number(value: Any) -> float | None:
    """A number GX or pandas gave (numpy's too), else None; never a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return None if math.isnan(number) else number


_LOCK = threading.Lock()


@functools.cache
def _gx() -> tuple[Any, Any]:
    """GX, imported on first use, and its test of an expectation that judges rows."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    kinds = (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)
    return gx, lambda expectation: isinstance(expectation, kinds)


@functools.cache
def _context() -> tuple[Any, Any]:
    """One ephemeral GX context per process (creating one costs more than validating)."""
    gx, _ = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas("recon")
        .add_dataframe_asset("stage_metrics")
        .add_batch_definition_whole_dataframe("run")
    )
    return context, batch


def _raised(info: Any) -> bool:
    if isinstance(info, dict):
        return bool(info.get("raised_exception")) or any(_raised(v) for v in info.values())
    return False


def _message(info: Any) -> str:
    if isinstance(info, dict):
        if info.get("exception_message"):
            return str(info["exception_message"])
        return next((m for m in map(_message, info.values()) if m), "")
    return ""
