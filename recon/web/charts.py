"""Server-side SVG charts: nothing to load from anywhere, so the dashboard works offline."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")
W, H, PAD = 860, 240, 48
LEGEND = 110  # room on the right for the stage names


def loss_chart(
    series: dict[str, list[tuple[datetime, float, bool]]], thresholds: dict[str, float | None]
) -> str:
    """Loss rate per stage over time; dashed threshold lines; breached windows in red."""
    points = [p for values in series.values() for p in values]
    if not points:
        return '<p class="empty">No windows in this range.</p>'
    t0 = min(p[0] for p in points).timestamp()
    t1 = max(p[0] for p in points).timestamp()
    top = max([p[1] for p in points] + [t for t in thresholds.values() if t] + [1e-4]) * 1.15
    span = max(t1 - t0, 1.0)

    def x(t: datetime) -> float:
        return PAD + (t.timestamp() - t0) / span * (W - 2 * PAD - LEGEND)

    def y(v: float) -> float:
        return H - PAD + -(v / top) * (H - 2 * PAD)

    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD - LEGEND}" y2="{H - PAD}" stroke="#999"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#999"/>',
        f'<text x="4" y="{PAD}" font-size="11">{top:.3%}</text>',
        f'<text x="4" y="{H - PAD}" font-size="11">0%</text>',
    ]
    for i, (stage, values) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v, _ in sorted(values))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for t, v, breach in values:
            if breach:
                parts.append(
                    f'<circle class="breach" cx="{x(t):.1f}" cy="{y(v):.1f}" r="4" '
                    f'fill="#d62728"><title>{escape(stage)} breach at '
                    f"{escape(t.isoformat())}: {v:.4%}</title></circle>"
                )
        limit = thresholds.get(stage)
        if limit:
            parts.append(
                f'<line x1="{PAD}" y1="{y(limit):.1f}" x2="{W - PAD - LEGEND}" '
                f'y2="{y(limit):.1f}" stroke="{colour}" stroke-dasharray="4 3"/>'
            )
        parts.append(
            f'<text x="{W - PAD - LEGEND + 8}" y="{PAD + 14 * i}" font-size="11" '
            f'fill="{colour}">{escape(stage)}</text>'
        )
    parts.append(
        f'<text x="{PAD}" y="{H - 8}" font-size="11">'
        f"{escape(datetime.fromtimestamp(t0, UTC).isoformat())}</text>"
    )
    parts.append("</svg>")
    return "".join(parts)
