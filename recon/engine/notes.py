"""A window's notes: what its numbers alone would hide, in words for the report."""

from __future__ import annotations

from recon.config import PipelineConfig
from recon.model import ExpectationOutcome, StageInput, StageMetrics, Window

MAX_NOTES_PER_STAGE = 20


def read_notes(stages: list[StageInput], window: Window) -> list[str]:
    """Retention gaps, and the unusable rows (no usable ID or time) that count in this window."""
    notes = []
    for stage in stages:
        for read in [stage.ledger, *stage.dead_letters]:
            notes += [f"{stage.name}: {gap}" for gap in read.gaps]
            notes += [f"{stage.name}: {warning}" for warning in read.warnings]
            bad = [b for b in read.bad_records if b.counts_in(window)]
            if not bad:
                continue
            notes.append(
                f"{stage.name}: {sum(b.count for b in bad)} rows without a usable "
                f"event ID or time in {read.source}"
            )
            notes += [f"{stage.name}:   {b.where}: {b.reason}" for b in bad[:MAX_NOTES_PER_STAGE]]
            if len(bad) > MAX_NOTES_PER_STAGE:
                notes.append(f"{stage.name}:   ... and {len(bad) - MAX_NOTES_PER_STAGE} more")
    return notes


def stall_notes(
    cfg: PipelineConfig, stalled: dict[str, int], stages: list[StageInput]
) -> list[str]:
    """Why events in flight were charged as lost: the group and where it has committed."""
    notes = []
    for i, stage in enumerate(cfg.stages[1:], start=1):
        n = stalled.get(stage.name, 0)
        if not n:
            continue
        before = cfg.stages[i - 1]
        group = getattr(before, "consumer_group", None)
        offsets = stages[i - 1].ledger.committed or {}
        where = ", ".join(f"[{p}]@{o}" for p, o in sorted(offsets.items())) or "none"
        notes.append(
            f"{stage.name}: {n} events in flight past stall ({cfg.window.stall}): still at or "
            f"beyond the committed offsets of consumer group {group!r} on {before.name} "
            f"({where}) a stall after the window's end, so charged as lost (a rewound or "
            "stuck consumer)"
        )
    return notes


def verdict_notes(
    outcomes: list[ExpectationOutcome],
    stages: list[StageMetrics],
    dead_letter_errors: dict[str, dict[str, int]],
) -> list[str]:
    """What broke a limit besides loss (the table shows loss), and why events were dead-lettered.

    Volume, unreadable rows, every failed expectation of the user's (by its
    name), and each stage's dead-lettered events by their error.
    """
    notes = []
    unreadable = {m.stage: m.unreadable for m in stages}
    for e in outcomes:
        if e.success:
            continue
        if e.name is not None:
            seen = f": observed {e.observed:g}" if e.observed is not None else ""
            notes.append(f"{e.stage}: expectation {e.name!r} failed{seen}")
        elif e.observed is None:
            continue
        elif e.column == "events":
            notes.append(
                f"{e.stage}: volume dropped to {e.observed:.0f} events "
                f"(min_events {e.threshold:.0f} for this window)"
            )
        elif e.column == "unreadable_rate":
            notes.append(
                f"{e.stage}: {unreadable.get(e.stage, 0)} rows without a usable event ID or "
                f"time, {e.observed:.4%} of the rows seen, above max_unreadable_rate "
                f"{e.threshold:g}: the window cannot be judged ok"
            )
    for stage, errors in dead_letter_errors.items():
        shown = [f"{n} {_short(text)!r}" for text, n in list(errors.items())[:MAX_NOTES_PER_STAGE]]
        more = len(errors) - len(shown)
        notes.append(
            f"{stage}: {sum(errors.values())} dead-lettered by error: {', '.join(shown)}"
            + (f" and {more} more errors" if more > 0 else "")
        )
    return notes


def _short(text: str, limit: int = 200) -> str:
    """An error text cut for a note (the dashboard shows it whole)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
