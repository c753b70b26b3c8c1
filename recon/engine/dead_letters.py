"""A window's dead-lettered events counted by the error their dead letters carry.

The ledger reads keep only IDs, times and places; the error text is read
afterwards, for the dead-lettered events only, from the sinks whose kind reads
a row's headers (Kafka: `error`, `x-error` or `exception`), one read per sink
and span. A sink of another kind, or a dead letter without an error header,
counts under a name that says so, so the counts always sum to `dead_lettered`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from recon.config import PipelineConfig
from recon.model import StageInput
from recon.sources import kind_of
from recon.sources.kind import ERROR_HEADERS, error_text

NO_ERROR_HEADER = f"(no {'/'.join(ERROR_HEADERS)} header)"


def not_read(kind: str) -> str:
    """The name dead letters of a sink whose kind cannot give an error text count under."""
    return f"(error text not read from {kind} sinks)"


Errors = dict[str, dict[str, int]]  # stage -> error text -> dead-lettered events


def dead_letter_errors(
    cfg: PipelineConfig, stages: list[StageInput], missing: list[pa.Table | None]
) -> list[Errors]:
    """Per window (`missing` of each, in order): per stage, dead-lettered events by error.

    An event with several dead letters is counted once, by its latest one.
    """
    out: list[Errors] = [{} for _ in missing]
    for stage in stages[1:]:
        sinks = cfg.dead_letters_of(stage.name)
        ids = [_dead_lettered(m, stage.name) for m in missing]
        if not sinks or not any(len(i) for i in ids):
            continue
        latest = _latest_rows(stage, [s.name for s in sinks], pa.concat_arrays(ids))
        texts = _texts(cfg, latest)
        for w, window_ids in enumerate(ids):
            counts: dict[str, int] = {}
            for event_id in window_ids.to_pylist():
                text = texts[event_id]
                counts[text] = counts.get(text, 0) + 1
            if counts:
                out[w][stage.name] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def _dead_lettered(missing: pa.Table | None, stage: str) -> pa.Array:
    if missing is None:
        return pa.array([], pa.string())
    keep = pc.and_(pc.equal(missing["outcome"], "dead_lettered"), pc.equal(missing["stage"], stage))
    return missing.filter(keep)["event_id"].combine_chunks().cast(pa.string())


def _latest_rows(
    stage: StageInput, sinks: list[str], ids: pa.Array
) -> dict[str, tuple[str, int | None, int | None]]:
    """Each event's latest dead letter: (sink, partition, offset)."""
    latest: dict[str, tuple[object, str, int | None, int | None]] = {}
    wanted = pa.array(pc.unique(ids))
    for sink, read in zip(sinks, stage.dead_letters, strict=True):
        rows = read.table.filter(pc.is_in(read.table["event_id"], value_set=wanted))
        for event_id, t, p, o in zip(
            *(rows[c].to_pylist() for c in ("event_id", "stage_time", "partition", "offset")),
            strict=True,
        ):
            if event_id not in latest or t >= latest[event_id][0]:
                latest[event_id] = (t, sink, p, o)
    return {e: (sink, p, o) for e, (_, sink, p, o) in latest.items()}


def _texts(
    cfg: PipelineConfig, latest: dict[str, tuple[str, int | None, int | None]]
) -> dict[str, str]:
    """The error text of each event's latest dead letter (one header read per sink)."""
    sinks = {d.name: d for d in cfg.dead_letters}
    texts: dict[str, str] = {}
    for name, sink in sinks.items():
        mine = {e: (p, o) for e, (s, p, o) in latest.items() if s == name}
        if not mine:
            continue
        headers_many = kind_of(sink).headers_many
        placed = {e: (p, o) for e, (p, o) in mine.items() if p is not None and o is not None}
        if headers_many is None or len(placed) < len(mine):
            texts.update(dict.fromkeys(mine, not_read(sink.source)))
            continue
        headers = headers_many(sink, sorted(set(placed.values())))
        for event_id, at in placed.items():
            texts[event_id] = error_text(headers[at]) or NO_ERROR_HEADER
    return texts
