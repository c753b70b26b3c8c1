"""What the Airflow DAGs call: plan windows, reconcile one, gate the night, early warning.

The DAG files stay thin (scheduling, retries, mapping); everything here is
plain Python that raises recon's errors, so it is testable without Airflow.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import yaml

from recon.alerts.channels import AlertDeliveryError
from recon.alerts.dispatch import publish_and_notify
from recon.config import PipelineConfig, parse_config
from recon.engine import shards
from recon.engine.early_warning import check, last_hours
from recon.engine.heap import tune_process
from recon.engine.reading import count_origin
from recon.engine.runner import finish_computed, run
from recon.errors import ConfigError, ReconError
from recon.model import Shard, Status, Window
from recon.store import ResultStore, store_url
from recon.timeutil import iso, parse_instant

RESTATE_DAYS = 7  # how far back incomplete windows are re-run


def _json_setting(value: str | None, name: str) -> Any:
    if not value:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        if name == "recon_configs":  # also accept a comma-separated list of paths
            return [v.strip() for v in value.split(",") if v.strip()]
        raise ConfigError(f"{name}: not JSON: {value[:80]!r}") from None


def config_paths(value: str | None) -> list[str]:
    """The config files to reconcile (Airflow Variable `recon_configs`, else RECON_CONFIGS)."""
    paths = _json_setting(value or os.environ.get("RECON_CONFIGS"), "recon_configs") or []
    if not paths:
        raise ConfigError(
            "no pipeline configs: set the Airflow Variable recon_configs "
            "(a JSON list of paths) or RECON_CONFIGS"
        )
    return list(paths)


def load(path: str, overrides: str | None = None) -> PipelineConfig:
    """A config file with deployment overrides merged on top.

    Overrides (Airflow Variable `recon_overrides`, else RECON_OVERRIDES) are JSON
    top-level keys: thresholds, alerts, metrics, results, expectations. Overridden
    thresholds are checked by the suite in `<expectations>/deployment/` unless the
    overrides name an `expectations` directory.
    """
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{file}: {exc}") from None
    extra = _json_setting(overrides or os.environ.get("RECON_OVERRIDES"), "recon_overrides")
    if extra:
        if "thresholds" in extra and "expectations" not in extra:
            # The suite of the file's thresholds would refuse these (a suite that disagrees
            # with its config stops the run): the deployment's thresholds get a suite of
            # their own, written on first use and checked from then on.
            base = data.get("expectations") if isinstance(data, dict) else None
            extra = {**extra, "expectations": str(Path(base or "expectations") / "deployment")}
        data = {**data, **extra}
    return parse_config(data, str(file), file.resolve().parent)


def _store(cfg: PipelineConfig, path: str) -> ResultStore:
    return ResultStore(store_url(cfg.results, Path(path).resolve().parent))


# Executors whose tasks all run on the scheduler's machine, where one SQLite file is shared.
LOCAL_EXECUTORS = frozenset({"LocalExecutor", "SequentialExecutor", "DebugExecutor"})


def shared_store(cfg: PipelineConfig, path: str, executor: str | None) -> None:
    """Refuse a SQLite results store when tasks may run on other machines.

    With Celery or Kubernetes workers each would write a file of its own: the
    gate would see none of the windows, and nothing would page.
    """
    url = store_url(cfg.results, Path(path).resolve().parent)
    names = {e.strip().rsplit(".", 1)[-1] for e in (executor or "").split(",") if e.strip()}
    if url.startswith("sqlite") and names and not names <= LOCAL_EXECUTORS:
        raise ConfigError(
            f"{path}: results is a SQLite file ({url}), but Airflow's executor "
            f"{executor} runs tasks on other machines, each of which would write its own: "
            "set `results` (or recon_overrides) to a shared PostgreSQL URL"
        )


@dataclass(frozen=True)
class Item:
    """One mapped task: a config and consecutive windows [start, end) reconciled in one run."""

    config: str
    start: str
    end: str

    def as_dict(self) -> dict[str, str]:
        """XCom-friendly."""
        return {"config": self.config, "start": self.start, "end": self.end}


def night(
    data_interval_start: Any,
    data_interval_end: Any,
    *,
    day: str | None = None,
    manual: bool = False,
    logical_date: Any = None,
    now: datetime,
) -> tuple[datetime, datetime]:
    """The range a nightly run reconciles.

    Rule 1: a `day` (the DAG's param, YYYY-MM-DD) is that UTC day.
    Rule 2: a manual run (Airflow 3 gives it no data interval of its own) reconciles
            the last whole day before its logical date, as the scheduled run at that
            time would (`--logical-date 2026-11-28` reconciles 2026-11-27), or
            yesterday when it has none.
    Rule 3: a scheduled run (and a backfill) reconciles its data interval.
    """
    if day:
        try:
            start = parse_instant(f"{day}T00:00:00Z")
        except ValueError:
            raise ConfigError(f"day: not a date YYYY-MM-DD: {day!r}") from None
        return start, start + timedelta(days=1)
    if manual or data_interval_start is None or data_interval_end is None:
        at = _instant(logical_date) if logical_date is not None else now
        end = at.replace(hour=0, minute=0, second=0, microsecond=0)
        return end - timedelta(days=1), end
    return _instant(data_interval_start), _instant(data_interval_end)


def _instant(value: Any) -> datetime:
    # Airflow hands over pendulum datetimes; recon works on plain UTC datetimes.
    return parse_instant(str(value).replace(" ", "T"))


def plan(
    paths: list[str],
    start: datetime,
    end: datetime,
    overrides: str | None = None,
    windows_per_task: int = 6,
    executor: str | None = None,
    now: datetime | None = None,
) -> list[dict[str, str]]:
    """The mapped tasks: every window of [start, end) for every config, plus restated ones.

    Consecutive windows go `windows_per_task` to a task (one process start, one read
    of each source for them, instead of one per window). Windows of the last days
    whose latest result is still incomplete are re-run; their new result supersedes
    the old one in the store. `executor` (Airflow's [core] executor) decides whether
    the workers share the machine, and so whether a SQLite store can be shared.
    A config with `shards` splits each window whose origin counts more than
    `above_events` rows into `count` shard tasks (`shard_items`), judged at `now`.
    """
    start, end = _instant(start), _instant(end)
    now = now or datetime.now(UTC)
    token = uuid.uuid4().hex  # this night's partials, apart from any other run's
    items: list[Item] = []
    sharded: list[dict[str, str]] = []
    for path in paths:
        cfg = load(path, overrides)
        shared_store(cfg, path, executor)
        windows = cfg.window.cut(start, end)
        stored = _store(cfg, path)
        stored.upgrade()
        older = stored.windows(cfg.pipeline)
        if not older.empty:
            since = start - timedelta(days=RESTATE_DAYS)
            stale = older[
                (older["status"] == Status.INCOMPLETE)
                & (older["window_start"] >= since)
                & (older["window_end"] <= start)
            ]
            # A row's fields hold whatever its columns do (pandas types them as any scalar).
            windows = [
                Window(r.window_start.to_pydatetime(), r.window_end.to_pydatetime())
                for r in cast(Iterator[Any], stale.itertuples())
            ] + windows
        big = _big_windows(cfg, windows)
        for w in big:
            sharded += shard_items(cfg, path, w, token, now)
        whole = [w for w in windows if w not in big]
        for group in _consecutive(whole, max(1, windows_per_task)):
            items.append(Item(path, group[0].start.isoformat(), group[-1].end.isoformat()))
    return [i.as_dict() for i in items] + sharded


def _big_windows(cfg: PipelineConfig, windows: list[Window]) -> set[Window]:
    """The windows to shard: origin rows over `shards.above_events`, counted without reading.

    An origin that cannot be counted so (file logs) is not sharded.
    """
    if cfg.shards is None or not windows:
        return set()
    counts = count_origin(cfg, windows)
    if counts is None:
        return set()
    return {w for w, n in zip(windows, counts, strict=True) if n > cfg.shards.above_events}


def shard_items(
    cfg: PipelineConfig, path: str, window: Window, token: str, now: datetime
) -> list[dict[str, str]]:
    """The `shards.count` mapped tasks of one window: all judged at the plan's `now`."""
    assert cfg.shards is not None  # only called for a config with shards
    count = cfg.shards.count
    return [
        {
            "config": path,
            "start": window.start.isoformat(),
            "end": window.end.isoformat(),
            "shard": str(k),
            "shards": str(count),
            "now": iso(now),
            "partials": str(Path(cfg.shards.directory) / token),
        }
        for k in range(count)
    ]


def _consecutive(windows: list[Window], most: int) -> list[list[Window]]:
    """Runs of windows that follow each other, at most `most` long."""
    groups: list[list[Window]] = []
    for w in windows:
        if groups and groups[-1][-1].end == w.start and len(groups[-1]) < most:
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups


def reconcile_item(item: dict[str, str], overrides: str | None = None) -> dict[str, Any]:
    """Reconcile and store a task's windows; an unreadable source raises (the task retries).

    A shard's task (`shard_items`) stores nothing: it writes its partial result
    for `merge_shards` and returns where.
    """
    tune_process()  # the task's process is recon's
    if "shard" in item:
        return reconcile_shard_item(item, overrides)
    cfg = load(item["config"], overrides)
    report = run(
        cfg,
        parse_instant(item["start"]),
        parse_instant(item["end"]),
        _store(cfg, item["config"]),
        keep_missing=False,
    )
    for window in report.windows:
        if window.status == Status.ERROR:
            raise ReconError(f"{cfg.pipeline} {window.window}: {window.error}")
    return {
        "config": item["config"],
        "windows": [w.as_dict() for w in report.windows],
        "run_id": report.run_id,
    }


def reconcile_shard_item(item: dict[str, str], overrides: str | None = None) -> dict[str, Any]:
    """Reconcile one shard of a window; its partial goes to shared storage, its path to XCom."""
    cfg = load(item["config"], overrides)
    window = Window(parse_instant(item["start"]), parse_instant(item["end"]))
    shard = Shard(int(item["shard"]), int(item["shards"]))
    partial = shards.reconcile_shard(cfg, window, shard, parse_instant(item["now"]))
    where = shards.partial_dir(item["partials"], cfg.pipeline, window, shard)
    return {**item, "partial": shards.save(partial, where)}


def merge_shards(
    results: list[dict[str, Any]], overrides: str | None = None
) -> list[dict[str, Any]]:
    """Every sharded window merged from its shards' partials, gated and stored as one window.

    Other tasks' results pass through unchanged, before the merged windows. A
    stored window leaves a marker with its result beside its partials, so a
    retried merge (a later window's store failed) skips it instead of merging
    partials it has deleted; the windows' directories go once all are stored.
    """
    whole = [r for r in results if "partial" not in r]
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        if "partial" in r:
            groups.setdefault((r["config"], r["start"], r["end"], r["partials"]), []).append(r)
    merged = []
    done = []
    for (path, start, end, _), entries in sorted(groups.items()):
        where = Path(entries[0]["partial"]).parent  # the window's directory
        marker = where / _STORED
        if marker.exists():
            merged.append(json.loads(marker.read_text()))
            done.append(where)
            continue
        cfg = load(path, overrides)
        try:
            partials = [shards.load(e["partial"]) for e in entries]
        except OSError as exc:
            raise ReconError(f"{cfg.pipeline} [{start}, {end}): a shard's partial: {exc}") from exc
        report = finish_computed(
            cfg,
            parse_instant(start),
            parse_instant(end),
            [shards.merge(cfg, partials)],
            _store(cfg, path),
            parse_instant(entries[0]["now"]),
            keep_missing=False,
        )
        entry = {
            "config": path,
            "windows": [w.as_dict() for w in report.windows],
            "run_id": report.run_id,
        }
        tmp = where / f".{_STORED}.tmp"
        tmp.write_text(json.dumps(entry))
        tmp.replace(marker)
        merged.append(entry)
        done.append(where)
    for where in done:
        shutil.rmtree(where)
    return whole + merged


_STORED = "stored.json"  # a merged window's result, once stored


def _breached(entry: dict[str, Any], pipeline: str) -> list[str]:
    windows = entry["windows"]
    return [
        f"{pipeline} [{w['start']}, {w['end']})" for w in windows if w["status"] == Status.BREACH
    ]


def gate(
    results: list[dict[str, Any]], now: datetime, overrides: str | None = None
) -> dict[str, list[str]]:
    """After all tasks: publish metrics and send alert notices, per pipeline.

    Both follow each pipeline's stored state (not only tonight's windows): one
    notice per incident. Every pipeline is attempted; a delivery failure is raised
    after all were. Returns each pipeline's breached windows of the night (the DAG
    announces the clean ones and fails its verdict task on the others).
    """
    breached: dict[str, list[str]] = {}
    failures = []
    for path in sorted({r["config"] for r in results}):
        cfg = load(path, overrides)
        mine = [r for r in results if r["config"] == path]
        try:
            publish_and_notify(cfg, _store(cfg, path), now, mine[-1]["run_id"])
        except ReconError as exc:
            failures.append(f"{cfg.pipeline}: {exc}")
        found = breached.setdefault(cfg.pipeline, [])
        found += [w for r in mine for w in _breached(r, cfg.pipeline)]
    if failures:
        raise AlertDeliveryError("; ".join(failures))
    return breached


def asset_uri(pipeline: str) -> str:
    """The Airflow Asset a pipeline's clean night is announced on (downstream DAGs wait on it)."""
    return f"recon://{quote(pipeline, safe='')}/reconciled"


def early_warning(
    paths: list[str],
    end: datetime,
    hours: float = 3,
    max_drop: float | None = None,
    overrides: str | None = None,
) -> list[str]:
    """The count-only check over the last hours; the flagged hops, described."""
    flagged = []
    for path in paths:
        cfg = load(path, overrides)
        for w in check(cfg, *last_hours(cfg, _instant(end), hours), max_drop):
            flagged += [
                f"{cfg.pipeline} {w.window} {h.stage}: {h.drop:.1%} drop "
                f"({h.arrived}+{h.dead_lettered} of {h.upstream})"
                for h in w.flagged
            ]
            if w.volume_low:
                flagged.append(
                    f"{cfg.pipeline} {w.window} {cfg.origin.name}: volume dropped to "
                    f"{w.origin} (min_events {w.min_events})"
                )
    return flagged
