"""The intraday early warning: per-hop count ratios from cheap counts, no IDs read.

Counts come from Kafka offset ranges (`offsets_for_times`), parquet footers
(the time column alone, filtered, for a partition that straddles the window or
a layout without time keys) and SQL `count(*)`, so a day of hourly partitions
is checked in about a second. Counts
can mislead where the ID-level run cannot: duplicates (webhook and producer
retries) inflate a stage, Kafka transaction markers take offsets without being
messages, events near a window's end land downstream in the next window, and
a lagging consumer looks like a drop until it catches up. The threshold is
therefore a drop rate well above those effects (default 5 %); the nightly
`recon run` settles each window with exact, ID-level numbers.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from recon.config import PipelineConfig
from recon.model import Window
from recon.sources import count_ledger_windows
from recon.sources.base import SourceConfig
from recon.timeutil import iso

DEFAULT_MAX_DROP = 0.05


@dataclass(frozen=True)
class HopCount:
    """Counts around one hop: what left the previous stage and what reached this one."""

    stage: str
    upstream: int
    arrived: int
    dead_lettered: int

    @property
    def drop(self) -> float:
        """Share of the upstream count that neither arrived nor was dead-lettered."""
        if not self.upstream:
            return 0.0
        return max(0.0, 1 - (self.arrived + self.dead_lettered) / self.upstream)


@dataclass
class CheckWindow:
    """One window of the early warning."""

    window: Window
    hops: list[HopCount]
    max_drop: float
    counts: dict[str, int] = field(default_factory=dict)
    origin: int = 0  # the origin's rows in the window
    min_events: int | None = None  # its volume floor (thresholds.min_events), if any

    @property
    def flagged(self) -> list[HopCount]:
        """Hops whose drop is above the threshold."""
        return [h for h in self.hops if h.drop > self.max_drop]

    @property
    def volume_low(self) -> bool:
        """The origin wrote fewer rows than its floor (an origin that stopped writing)."""
        return self.min_events is not None and self.origin < self.min_events

    @property
    def alarming(self) -> bool:
        """A hop dropped or the volume fell below its floor: `recon check` exits 1."""
        return bool(self.flagged) or self.volume_low

    def as_dict(self) -> dict[str, object]:
        """JSON shape of a checked window."""
        return {
            "start": iso(self.window.start),
            "end": iso(self.window.end),
            "counts": dict(self.counts),
            "hops": [
                {
                    "stage": h.stage,
                    "upstream": h.upstream,
                    "arrived": h.arrived,
                    "dead_lettered": h.dead_lettered,
                    "drop": h.drop,
                    "flagged": h in self.flagged,
                }
                for h in self.hops
            ],
            "origin": self.origin,
            "min_events": self.min_events,
            "volume_low": self.volume_low,
        }


def last_hours(cfg: PipelineConfig, end: datetime, hours: float) -> tuple[datetime, datetime]:
    """The whole windows of the last `hours` before `end`, on the window size's grid.

    Windows start where the nightly run's do (multiples of the size since the
    epoch, as hours start on the hour): 12:23 with 1h windows checks up to 12:00.
    """
    size = cfg.window.size
    epoch = datetime(1970, 1, 1, tzinfo=end.tzinfo)
    aligned = epoch + ((end - epoch) // size) * size
    count = max(1, math.ceil(timedelta(hours=hours) / size))
    return aligned - count * size, aligned


def check(
    cfg: PipelineConfig, start: datetime, end: datetime, max_drop: float | None = None
) -> list[CheckWindow]:
    """Count every stage and dead-letter sink per window of [start, end) and compare hops.

    A hop whose drop is above `max_drop` (default `DEFAULT_MAX_DROP`) is flagged.
    """
    max_drop = DEFAULT_MAX_DROP if max_drop is None else max_drop
    windows = cfg.window.cut(start, end)
    sources: list[SourceConfig] = [*cfg.stages, *cfg.dead_letters]
    # One job per source, all its windows on one connection or consumer.
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        by_source = list(pool.map(lambda s: count_ledger_windows(s, windows), sources))
    per_window = [
        {s.name: counts[i] for s, counts in zip(sources, by_source, strict=True)}
        for i in range(len(windows))
    ]
    result = []
    for window, c in zip(windows, per_window, strict=True):
        hops = []
        for prev, stage in zip(cfg.stages, cfg.stages[1:], strict=False):
            dead = sum(c[d.name] for d in cfg.dead_letters_of(stage.name))
            hops.append(HopCount(stage.name, c[prev.name], c[stage.name], dead))
        floor = cfg.min_events(window.start)
        result.append(CheckWindow(window, hops, max_drop, c, c[cfg.origin.name], floor))
    return result


def check_table(windows: list[CheckWindow]) -> str:
    """Readable lines, one per window and hop."""
    lines = [
        f"{'window start':22} {'hop':12} {'upstream':>10} {'arrived':>10} "
        f"{'dead_letters':>12} {'drop':>8}"
    ]
    for w in windows:
        if w.volume_low:
            lines.append(
                f"{iso(w.window.start):22} volume dropped to {w.origin} "
                f"(min_events {w.min_events})  VOLUME"
            )
        for h in w.hops:
            flag = "  DROP" if h in w.flagged else ""
            lines.append(
                f"{iso(w.window.start):22} {h.stage:12} {h.upstream:>10} "
                f"{h.arrived:>10} {h.dead_lettered:>12} {h.drop:>8.2%}{flag}"
            )
    return "\n".join(lines) + "\n"
