"""Server-side SVG charts: nothing to load from anywhere, so the dashboard works offline."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import escape

W = 860
LEFT, RIGHT = 78, 16  # room for the y labels; a little air on the right
PANEL, GAP = 64, 22  # one panel per stage, its name in the gap above it
AXIS = 34  # the time axis under the last panel
ZERO_GAP = 10  # a zero rate sits this far under the lowest decade (log has no zero)
# Steps a time axis may use: the first that gives at most MAX_TICKS labels is taken.
STEPS = [timedelta(minutes=m) for m in (5, 10, 15, 30)] + [
    timedelta(hours=h) for h in (1, 2, 3, 6, 12, 24, 48, 168)
]
MAX_TICKS = 9

Series = dict[str, list[tuple[datetime, float, bool]]]


def pct(rate: float) -> str:
    """A loss rate short enough for a cell, precise enough that 0.005 % is not 0."""
    if rate == 0:
        return "0%"
    value = rate * 100
    return f"{value:.1f}%" if value >= 1 else f"{value:.2g}%"


def time_ticks(t0: datetime, t1: datetime) -> list[datetime]:
    """Round instants between t0 and t1, at most MAX_TICKS of them."""
    span = max(t1 - t0, timedelta(minutes=1))
    step = next((s for s in STEPS if span / s <= MAX_TICKS), STEPS[-1])
    seconds = step.total_seconds()
    first = math.ceil(t0.timestamp() / seconds) * seconds
    ticks, at = [], first
    while at <= t1.timestamp():
        ticks.append(datetime.fromtimestamp(at, UTC))
        at += seconds
    return ticks


class _Scale:
    """Rate -> y inside a panel: log by decades (0 drawn under them), or linear."""

    lo: float
    hi: float

    def __init__(self, rates: list[float], log: bool) -> None:
        self.log = log
        positive = [r for r in rates if r > 0]
        if log:
            # At least 0.001 % .. 0.1 %, so a 0.01 % threshold is never on an edge.
            self.lo = min([1e-5, *positive])
            self.lo = 10 ** math.floor(math.log10(self.lo))
            self.hi = 10 ** math.ceil(math.log10(max([1e-3, *positive])))
        else:
            self.lo, self.hi = 0.0, max([1e-4, *positive]) * 1.15

    def y(self, rate: float, top: float) -> float:
        """Pixel row of `rate` in the panel whose top is `top`."""
        inner = PANEL - ZERO_GAP if self.log else PANEL
        if not self.log:
            return top + PANEL - rate / self.hi * PANEL
        if rate <= 0:
            return top + PANEL
        share = (math.log10(rate) - math.log10(self.lo)) / math.log10(self.hi / self.lo)
        return top + inner - min(max(share, 0.0), 1.0) * inner

    def labels(self) -> list[float]:
        """The rates labelled on the y axis (0 included)."""
        if not self.log:
            return [0.0, self.hi / 2, self.hi]
        decades = round(math.log10(self.hi / self.lo))
        every = 1 if decades <= 3 else 2  # a 64 px panel holds 4 labels comfortably
        return [0.0] + [self.lo * 10**k for k in range(0, decades + 1, every)]


def loss_chart(series: Series, thresholds: dict[str, float | None], log: bool = True) -> str:
    """Loss rate per stage over time, one panel per stage sharing the time and rate axes.

    Separate panels so no stage's line hides another's (end to end used to lie under the
    lake); a log scale so 0.005 % and a 0.01 % threshold are visibly apart from zero.
    """
    points = [p for values in series.values() for p in values]
    if not points:
        return '<p class="empty">No windows in this range.</p>'
    t0 = min(p[0] for p in points)
    t1 = max(p[0] for p in points)
    span = max((t1 - t0).total_seconds(), 1.0)
    limits = [v for v in thresholds.values() if v]
    scale = _Scale([p[1] for p in points] + limits, log)

    def x(t: datetime) -> float:
        return LEFT + (t - t0).total_seconds() / span * (W - LEFT - RIGHT)

    height = len(series) * (PANEL + GAP) + AXIS
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {height}" width="{W}" height="{height}" '
        f'role="img" font-size="11">'
    ]
    for i, (stage, values) in enumerate(series.items()):
        top = GAP + i * (PANEL + GAP)
        parts.append(_panel(stage, sorted(values), thresholds.get(stage), top, x, scale))
    parts.append(_time_axis(t0, t1, x, height - AXIS))
    parts.append("</svg>")
    return "".join(parts)


def _panel(
    stage: str,
    values: list[tuple[datetime, float, bool]],
    limit: float | None,
    top: int,
    x: Callable[[datetime], float],
    scale: _Scale,
) -> str:
    """One stage: name, y grid with labels, its threshold, its line, breach dots."""
    parts = [
        f'<text class="panel" x="4" y="{top - 7}" font-weight="bold">{escape(stage)}</text>',
        f'<rect x="{LEFT}" y="{top}" width="{W - LEFT - RIGHT}" height="{PANEL}" '
        'fill="#fafafa" stroke="#ddd"/>',
    ]
    for rate in scale.labels():
        y = scale.y(rate, top)
        parts.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" fill="#666">'
            f"{pct(rate)}</text>"
        )
    if limit:
        y = scale.y(limit, top)
        parts.append(
            f'<line class="threshold" x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" '
            f'stroke="#d62728" stroke-dasharray="5 3"><title>{escape(stage)} threshold '
            f"{pct(limit)}</title></line>"
            f'<text x="{W - RIGHT - 2}" y="{y - 3:.1f}" text-anchor="end" fill="#d62728">'
            f"threshold {pct(limit)}</text>"
        )
    path = " ".join(f"{x(t):.1f},{scale.y(v, top):.1f}" for t, v, _ in values)
    parts.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{path}"/>')
    for t, v, breach in values:
        # Every window a dot: a single window (no line to draw) is still visible.
        parts.append(f'<circle cx="{x(t):.1f}" cy="{scale.y(v, top):.1f}" r="2" fill="#1f77b4"/>')
        if breach:
            parts.append(
                f'<circle class="breach" cx="{x(t):.1f}" cy="{scale.y(v, top):.1f}" r="4" '
                f'fill="#d62728"><title>{escape(stage)} breach at '
                f"{escape(t.isoformat())}: {pct(v)}</title></circle>"
            )
    return "".join(parts)


def _time_axis(t0: datetime, t1: datetime, x: Callable[[datetime], float], y: float) -> str:
    """Ticks at round times; the date under the first tick and wherever the day changes."""
    parts = [f'<line x1="{LEFT}" y1="{y}" x2="{W - RIGHT}" y2="{y}" stroke="#999"/>']
    last_day = None
    for tick in time_ticks(t0, t1):
        at = x(tick)
        day = tick.strftime("%Y-%m-%d")
        parts.append(
            f'<line x1="{at:.1f}" y1="{y}" x2="{at:.1f}" y2="{y + 4}" stroke="#999"/>'
            f'<text class="tick" x="{at:.1f}" y="{y + 15}" text-anchor="middle">'
            f"{tick:%H:%M}</text>"
        )
        if day != last_day:
            parts.append(
                f'<text x="{at:.1f}" y="{y + 28}" text-anchor="middle" fill="#666">{day}</text>'
            )
            last_day = day
    return "".join(parts)
