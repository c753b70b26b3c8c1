"""Human-readable tables of window results for the terminal."""

from __future__ import annotations

from collections import Counter

from recon.engine.schemas import attribution
from recon.model import StageMetrics, Status, WindowResult

_COLOURS = {Status.OK: "32", Status.INCOMPLETE: "33", Status.BREACH: "31;1", Status.ERROR: "35;1"}
_COLUMNS = (
    ("stage", 12),
    ("upstream", 10),
    ("arrived", 10),
    ("lost", 8),
    ("dead_lettered", 13),
    ("pending", 8),
    ("unverifiable", 12),
    ("late", 6),
    ("duplicates", 10),
    ("orphans", 8),
    ("unreadable", 10),
    ("loss_rate", 10),
    ("p99_ms", 10),
    ("", 6),
)


def _status(status: Status, colour: bool) -> str:
    return f"\x1b[{_COLOURS[status]}m{status.upper()}\x1b[0m" if colour else status.upper()


def _row(m: StageMetrics, origin: bool) -> list[str]:
    if origin:  # the origin has no inbound hop: only its cohort and its own duplicates
        values: list[object] = [
            m.stage,
            "",
            m.arrived,
            *["-"] * 5,
            m.duplicates,
            "-",
            m.unreadable,
            "-",
            "-",
            "BREACH" if m.breach else "",
        ]
    else:
        p99 = m.latency_ms.get("p99")
        values = [
            m.stage,
            m.upstream,
            m.arrived,
            m.lost,
            m.dead_lettered,
            m.pending,
            m.unverifiable,
            m.late,
            m.duplicates,
            m.orphans,
            m.unreadable,
            f"{m.loss_rate:.4%}",
            "-" if p99 is None else f"{p99:.0f}",
            "BREACH" if m.breach else "",
        ]
    return [str(v) for v in values]


def window_table(result: WindowResult, colour: bool = False) -> str:
    """One window: a header line, one row per stage (origin first), then end to end."""
    head = f"{result.pipeline}  {result.window}  {_status(result.status, colour)}"
    if result.error is not None:
        return f"{head}\n  error: {result.error}\n"
    lines = [f"{head}  events={result.events}"]
    lines.append(
        "  "
        + " ".join(
            name.rjust(w) if i else name.ljust(w) for i, (name, w) in enumerate(_COLUMNS)
        ).rstrip()
    )
    assert result.end_to_end is not None
    for i, m in enumerate([*result.stages, result.end_to_end]):
        cells = _row(m, origin=i == 0)
        lines.append(
            "  "
            + " ".join(
                c.rjust(w) if j else c.ljust(w)
                for j, (c, (_, w)) in enumerate(zip(cells, _COLUMNS, strict=True))
            ).rstrip()
        )
    lines += [f"  note: {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def run_summary(windows: list[WindowResult], wall_s: float, where: list[str]) -> str:
    """The end of every run: windows by status, the worst hop, the loss, where it went."""
    statuses = Counter(w.status for w in windows)
    order = (Status.OK, Status.BREACH, Status.INCOMPLETE, Status.ERROR)
    counts = ", ".join(f"{statuses[s]} {s}" for s in order)
    events = sum(w.events or 0 for w in windows)
    rate = events / wall_s if wall_s > 0 else 0.0
    lines = [f"{len(windows)} windows in {wall_s:.1f}s ({rate:,.0f} events/s): {counts}"]
    lines += [_worst(windows), *_failed(windows)]
    lines += [f"cause: {w.window}: {text}" for w, text in causes(windows)]
    errors = [w for w in windows if w.error is not None]
    if errors:
        lines.append(f"error: {errors[0].error}")
    lines += where
    return "\n".join(lines) + "\n"


def _worst(windows: list[WindowResult]) -> str:
    """The hop that lost the largest share in any window, and the loss of the run."""
    hops = [(m, w) for w in windows for m in w.stages[1:] if w.error is None]
    worst = max(hops, key=lambda mw: (mw[0].loss_rate, mw[0].lost), default=None)
    if worst is None or not worst[0].lost:
        return "no event lost"
    m, w = worst
    lost = sum(x.end_to_end.lost for x in windows if x.end_to_end is not None)
    return (
        f"worst: {m.stage} in {w.window} lost {m.lost} of {m.upstream} ({m.loss_rate:.4%}); "
        f"{lost} events lost in all"
    )


def _failed(windows: list[WindowResult]) -> list[str]:
    """The first failed expectation of the user's: it can breach a window that lost nothing."""
    failed = [(w, e) for w in windows for e in w.expectations if e.name and not e.success]
    if not failed:
        return []
    w, e = failed[0]
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return [f"failed: {e.name} at {e.stage} in {w.window}{more}"]


def causes(windows: list[WindowResult]) -> list[tuple[WindowResult, str]]:
    """Each window's new schema IDs whose events are lost at the next hop, in words."""
    return [
        (w, f"{u.next_stage}: {text}")
        for w in windows
        for u in w.schema_ids
        if (text := attribution(u)) is not None
    ]
