"""Pipeline configuration: YAML, validated strictly, `${ENV}` substituted in values."""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from recon.errors import ConfigError
from recon.model import END_TO_END, Window
from recon.sources import REGISTRY
from recon.sources.base import Duration, SourceConfig, Strict, Thresholds
from recon.sources.kind import Kind
from recon.timeutil import as_utc, iso


def _source_union() -> Any:
    return Annotated[
        Union[tuple(k.config for k in REGISTRY.values())],  # noqa: UP007
        Field(discriminator="source"),
    ]


# A stage or dead-letter sink: one of the registered source kinds, chosen by `source`.
if TYPE_CHECKING:
    # The union is built from the registry at run time; every member is a SourceConfig.
    SourceSpec: TypeAlias = SourceConfig
else:
    SourceSpec = _source_union()
_ENV = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A run's windows are held in memory and stored one by one: a day of minutes is plenty.
MAX_WINDOWS = 10_000
DEFAULT_LOSS_RATE = 0.0001


class WindowConfig(Strict):
    """How time is cut: window size, how long late events are awaited, when a result is final."""

    size: Duration = timedelta(hours=1)
    grace: Duration = timedelta(minutes=30)
    settle: Duration = timedelta(hours=2)
    # Downstream clocks may run slightly behind the origin's.
    skew: Duration = timedelta(minutes=1)
    # An event still in flight this long after its window's end is not in flight: a
    # rewound or stuck consumer must not hide a loss as pending forever.
    stall: Duration = timedelta(hours=24)
    # The pipeline's state (alerts, metrics) is the latest result of every window that
    # started within this long before now: a stage is breached while one of them is.
    horizon: Duration = timedelta(days=7)

    def cut(self, start: datetime, end: datetime) -> list[Window]:
        """The windows of [start, end): on the grid of `size` since the epoch, or refused.

        Windows of a pipeline start at multiples of `size` since 1970-01-01T00:00Z
        (hours on the hour): a run from 00:30 would store windows overlapping the
        ones every other run stores.
        """
        for name, at in (("start", start), ("end", end)):
            if (as_utc(at) - _EPOCH) % self.size:
                raise ConfigError(
                    f"--{name} {iso(at)} is not on the {self.size} window grid "
                    f"(windows start at multiples of window.size since 1970-01-01T00:00Z)"
                )
        windows = Window(start, end).split(self.size)
        if len(windows) > MAX_WINDOWS:
            raise ConfigError(
                f"[{iso(start)}, {iso(end)}) makes {len(windows)} windows of {self.size}: "
                f"more than {MAX_WINDOWS} in one run; run a shorter range or larger windows"
            )
        return windows

    @model_validator(mode="after")
    def _positive(self) -> WindowConfig:
        if self.size < timedelta(minutes=1):
            raise ValueError("size must be at least 1m")
        if self.horizon < self.size:
            raise ValueError("horizon must hold at least one window (>= size)")
        for name in ("grace", "settle", "skew", "stall"):
            if getattr(self, name) < timedelta(0):
                raise ValueError(f"{name} must not be negative")
        return self


def safe_url(url: str) -> str:
    """Scheme and host only: webhook paths and queries carry secrets."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/..."


class Route(Strict):
    """Where notices go."""

    kind: Literal["slack", "pagerduty", "webhook"]
    url: str | None = None  # Slack/webhook URL; PagerDuty defaults to its Events API
    routing_key: str | None = None  # PagerDuty integration key
    attempts: int = Field(default=3, ge=1, le=10)
    timeout_s: float = Field(default=10, gt=0, le=600)

    @model_validator(mode="after")
    def _complete(self) -> Route:
        if self.kind in ("slack", "webhook") and not self.url:
            raise ValueError(f"a {self.kind} route needs its url")
        if self.kind == "pagerduty" and not self.routing_key:
            raise ValueError("a pagerduty route needs its routing_key")
        if self.url is not None:
            parts = urllib.parse.urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"url must be http(s)://host/..., got {safe_url(self.url)}")
        return self

    @property
    def key(self) -> str:
        """Identifies the route in the delivery state, without keeping its secrets."""
        target = f"{self.url or ''}|{self.routing_key or ''}"
        return f"{self.kind}:{hashlib.sha256(target.encode()).hexdigest()[:16]}"


class AlertsConfig(Strict):
    """Where breach notices go and how often a lasting breach is re-notified."""

    renotify: Duration = Field(default=timedelta(hours=4), ge=timedelta(0))
    routes: list[Route] = Field(default_factory=list)


_UNITS = {"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KiB": 2**10, "MiB": 2**20,
          "GiB": 2**30, "TiB": 2**40}  # fmt: skip
_MEMORY = r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"  # DuckDB's memory_limit units
DEFAULT_SQLITE = "recon-results.sqlite"  # the results store when the config names none


class MetricsConfig(Strict):
    """Prometheus metrics of every run: a textfile (node_exporter) and/or a Pushgateway."""

    textfile: str | None = None
    pushgateway: str | None = None


class ResourcesConfig(Strict):
    """What one run may use: rows a read may hold, DuckDB's memory before it spills to disk."""

    # Consecutive windows are read together while a source's read stays under it.
    max_rows_per_read: int = Field(default=2_000_000, gt=0, strict=True)
    # DuckDB's memory_limit for computing windows, and for a window over the read
    # budget (its ledgers already hold most of the process's memory).
    duckdb_memory: str = Field(default="800MB", pattern=_MEMORY)
    duckdb_memory_big_window: str = Field(default="300MB", pattern=_MEMORY)

    @field_validator("duckdb_memory", "duckdb_memory_big_window")
    @classmethod
    def _enough(cls, value: str) -> str:
        """Below ~64 MB DuckDB fails on its own bookkeeping instead of spilling."""
        number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(\w+)", value).groups()  # type: ignore[union-attr]
        if float(number) * _UNITS[unit] < 64 * 10**6:
            raise ValueError(f"{value} is too little for DuckDB: give at least 64MB")
        return value


class ShardsConfig(Strict):
    """When a window is split into shards by the hash of its event IDs (the nightly DAG).

    A window whose origin holds more than `above_events` rows (counted without
    reading them) is reconciled as `count` shard tasks, each writing its partial
    result under `directory` (storage every worker shares), then merged and stored
    as one window.
    """

    above_events: int = Field(ge=0, strict=True)
    count: int = Field(ge=2, le=1024, strict=True)
    # A local (or mounted) directory: partials are files every worker opens by path.
    directory: str = Field(default="recon-shards", min_length=1)

    @field_validator("directory")
    @classmethod
    def _local(cls, value: str) -> str:
        if "://" in value:
            raise ValueError(f"{value} is a URL: give a directory every worker mounts")
        return value


class PipelineConfig(Strict):
    """A pipeline: its origin is the first stage; dead-letter sinks name the stage they serve."""

    # Names key the store's indexes and the alerts' dedup keys: bounded.
    pipeline: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    window: WindowConfig = WindowConfig()
    thresholds: Thresholds = Thresholds(loss_rate=DEFAULT_LOSS_RATE)
    results: str | None = None
    expectations: str | None = None
    data_docs: str | None = None
    stages: list[SourceSpec] = Field(min_length=2)
    dead_letters: list[SourceSpec] = Field(default_factory=list)
    alerts: AlertsConfig | None = None
    metrics: MetricsConfig | None = None
    resources: ResourcesConfig = ResourcesConfig()
    shards: ShardsConfig | None = None

    @model_validator(mode="after")
    def _references(self) -> PipelineConfig:
        names = [s.name for s in self.stages] + [d.name for d in self.dead_letters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage and dead-letter names must be unique: {dupes}")
        if END_TO_END in names:
            # Reports, the store and the suite list the pipeline's totals under this name.
            raise ValueError(f"{END_TO_END!r} is reserved for the pipeline's totals")
        downstream = {s.name for s in self.stages[1:]}
        for stage in self.stages:
            if stage.stage is not None:
                raise ValueError(f"stage {stage.name}: 'stage' is only for dead_letters")
        for sink in self.dead_letters:
            if sink.stage not in downstream:
                raise ValueError(
                    f"dead letter {sink.name}: 'stage' must name a stage after the origin "
                    f"({sorted(downstream)}), got {sink.stage!r}"
                )
            if sink.thresholds is not None:
                raise ValueError(f"dead letter {sink.name}: thresholds belong to stages")
        for stage in self.stages:
            if stage.thresholds is not None and stage.thresholds.min_events is not None:
                raise ValueError(
                    f"stage {stage.name}: min_events is the origin's volume floor: "
                    "set it in the global thresholds"
                )
        _check_floor(self.thresholds.min_events)
        if self.thresholds.loss_rate is None and self.thresholds.max_lost is None:
            # `thresholds: {}` would check nothing at all: say so rather than pass silently.
            raise ValueError(
                "thresholds sets no limit: give loss_rate and/or max_lost "
                "(loss_rate: 1 accepts any loss)"
            )
        return self

    @property
    def origin(self) -> SourceConfig:
        """The first stage: its rows define each window's cohort."""
        return self.stages[0]

    def dead_letters_of(self, stage: str) -> list[SourceConfig]:
        """The dead-letter sinks of the hop into `stage`, in config order."""
        return [d for d in self.dead_letters if d.stage == stage]

    def max_unreadable_rate(self, stage: str) -> float:
        """The stage's limit on unreadable / (unreadable + upstream); default its loss rate."""
        th = self.thresholds_for(stage)
        if th.max_unreadable_rate is not None:
            return th.max_unreadable_rate
        return th.loss_rate if th.loss_rate is not None else DEFAULT_LOSS_RATE

    def min_events(self, window_start: datetime) -> int | None:
        """The origin's volume floor for the window starting at `window_start` (UTC), if any.

        A mapping gives a floor per time of day: each "HH:MM" key holds from that
        time until the next key (the last one wraps around to the first).
        """
        floor = self.thresholds.min_events
        if floor is None or isinstance(floor, int):
            return floor
        minute = window_start.hour * 60 + window_start.minute
        starts = sorted((_minute_of_day(k), v) for k, v in floor.items())
        return next((v for at, v in reversed(starts) if at <= minute), starts[-1][1])

    def thresholds_for(self, stage: str | None) -> Thresholds:
        """The stage's thresholds: its own overrides on top of the global ones.

        End to end (`END_TO_END`, never a stage's name) has the global ones.
        """
        override = next((s.thresholds for s in self.stages if s.name == stage), None)
        if override is None:
            return self.thresholds
        merged = self.thresholds.model_dump() | override.model_dump(exclude_none=True)
        return Thresholds(**merged)


_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def register_kind(kind: Kind[Any]) -> None:
    """Add a source kind: configs may name it from now on (the config model is rebuilt)."""
    REGISTRY[kind.name] = kind
    rebuild_source_union()


def rebuild_source_union() -> None:
    """Let configs name every kind in the registry (after `register_kind`)."""
    global SourceSpec
    SourceSpec = _source_union()
    for name in ("stages", "dead_letters"):  # the fields keep the union they were built with
        PipelineConfig.model_fields[name].annotation = list[SourceSpec]
    PipelineConfig.model_rebuild(force=True)


def _minute_of_day(key: str) -> int:
    match = _TIME_OF_DAY.match(key)
    if match is None:
        raise ValueError(f"min_events: {key!r} is not a time of day HH:MM (UTC)")
    return int(match.group(1)) * 60 + int(match.group(2))


def _check_floor(floor: int | dict[str, int] | None) -> None:
    """min_events: a count >= 0, or a non-empty mapping of "HH:MM" to counts >= 0."""
    values = [floor] if isinstance(floor, int) else list((floor or {}).values())
    if isinstance(floor, dict) and not floor:
        raise ValueError("thresholds.min_events: give a count, or at least one HH:MM: count")
    for key in floor if isinstance(floor, dict) else ():
        _minute_of_day(key)
    if any(v < 0 for v in values):
        raise ValueError("thresholds.min_events must not be negative")


def substitute_env(value: Any, where: str = "") -> Any:
    """Replace `${NAME}` in every string value by the environment variable NAME."""
    if isinstance(value, dict):
        return {k: substitute_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, f"{where}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if not _NAME.match(name):
                raise ConfigError(f"{where}: ${{{name}}} is not an environment variable name")
            if name not in os.environ:
                raise ConfigError(f"{where}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV.sub(lookup, value)
    return value


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make relative local paths relative to the config file, not the working directory."""

    def resolved(path: object, default: str | None = None) -> object:
        if not path and default is not None:
            path = default
        if isinstance(path, str) and path and "://" not in path:
            return str(base / path)  # an absolute `path` stays itself
        return path

    entries = [data.get(k) for k in ("stages", "dead_letters")]
    for entry in [e for group in entries if isinstance(group, list) for e in group]:
        kind = REGISTRY.get(str(entry.get("source"))) if isinstance(entry, dict) else None
        for key in kind.paths if kind is not None else ():
            if key in entry:
                entry[key] = resolved(entry[key])
    # The default store sits beside the config, wherever recon is called from (the CLI,
    # a notebook, a DAG): all of them read and write the same one.
    data["results"] = resolved(data.get("results"), DEFAULT_SQLITE)
    shards = data.get("shards")
    if isinstance(shards, dict) and shards.get("directory", "recon-shards"):
        shards["directory"] = resolved(shards.get("directory", "recon-shards"))
    for key, default in (("expectations", "expectations"), ("data_docs", "data-docs")):
        if data.get(key) is None or isinstance(data.get(key), str):
            data[key] = resolved(data.get(key), default)


def parse_config(data: Any, source: str = "<config>", base: Path | None = None) -> PipelineConfig:
    """Validate an already-loaded mapping; errors name `source` and the offending key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        data = substitute_env(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if base is not None:
        _resolve_paths(data, base)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from None


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the last one won)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool | None):
                continue  # an unhashable key: the constructor below says so
            if key in seen:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} given twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Aliases may repeat a node; one repeated inside itself a few levels deep is billions of
# nodes (an "alias bomb" hung recon). Far more than any pipeline needs:
MAX_NODES = 100_000


def _nodes(value: Any, memo: dict[int, int]) -> int:
    """How many values `value` stands for once every alias is expanded (each counted once)."""
    if id(value) in memo:
        return memo[id(value)]
    children: Any = ()
    if isinstance(value, dict):
        children = value.values()
    elif isinstance(value, list):
        children = value
    memo[id(value)] = 0  # a cycle counts nothing more
    total = 1 + sum(_nodes(child, memo) for child in children)
    memo[id(value)] = total
    return total


def load_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """Load and validate a YAML pipeline config file."""
    file = Path(path)
    try:
        data = yaml.load(file.read_text(), Loader=_StrictLoader)  # a SafeLoader
    except OSError as exc:
        raise ConfigError(f"{file}: {exc.strerror}") from None
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if _nodes(data, {}) > MAX_NODES:
        raise ConfigError(f"{file}: more than {MAX_NODES} values once YAML aliases are expanded")
    return parse_config(data, str(file), file.resolve().parent)
