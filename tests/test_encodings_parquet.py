"""`parquet` reader: time columns as epoch integers, ISO strings and naive timestamps in a
zone; ID columns as uuid, integers, and a lake whose files disagree on the ID's type."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recon.errors import SourceError
from recon.model import Window
from recon.sources import parquet
from recon.timeutil import epoch_us

from .helpers import W, at

HOUR10 = "dt=2026-11-20/hour=10"


def _write(path: Path, columns: dict[str, pa.Array]) -> Path:
    """One row per row group, so that the time filter prunes row groups, not files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=1)
    return path


def _cfg(root: Path, **options: object) -> parquet.Config:
    return parquet.Config(name="lake", source="parquet", path=str(root), **options)


def _rows(read) -> dict[str, object]:
    return dict(zip(*(read.table[c].to_pylist() for c in ("event_id", "stage_time")), strict=True))


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_epoch_integer_times_in_each_unit(tmp_path: Path, unit: str) -> None:
    """Epochs in `unit` in a flat lake (no time keys: filtered on the column alone):
    a 09:59:59.999999999 (out), b 10:00:00.000000999 (in), c 10:59:59.999999 (in),
    d 11:00:00 (out), each truncated to its unit; ns values are floored to the
    microsecond (b reads as 10:00:00, a as 09:59:59.999999). Read and count agree, and
    the next hour holds d alone."""
    scale = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    ns = {
        "a": epoch_us(at("10:00:00")) * 1000 - 1,
        "b": epoch_us(at("10:00:00")) * 1000 + 999,
        "c": epoch_us(at("10:59:59.999999")) * 1000,
        "d": epoch_us(at("11:00:00")) * 1000,
    }
    values = {k: v // scale for k, v in ns.items()}
    _write(
        tmp_path / "lake" / "part-0.parquet",
        {"event_id": list(values), "ingested_at": pa.array(list(values.values()), pa.int64())},
    )
    read = parquet.read(_cfg(tmp_path / "lake", time_unit=unit), W)
    want = {
        "s": {"b": at("10:00:00"), "c": at("10:59:59")},
        "ms": {"b": at("10:00:00"), "c": at("10:59:59.999")},
        "us": {"b": at("10:00:00"), "c": at("10:59:59.999999")},
        "ns": {"b": at("10:00:00"), "c": at("10:59:59.999999")},
    }[unit]
    assert _rows(read) == want
    assert read.bad_records == []
    assert parquet.count(_cfg(tmp_path / "lake", time_unit=unit), W) == 2
    late = parquet.read(_cfg(tmp_path / "lake", time_unit=unit), Window(W.end, at("12:00:00")))
    assert late.table["event_id"].to_pylist() == ["d"]


def test_an_integer_time_without_time_unit_is_an_error_naming_file_column_type(
    tmp_path: Path,
) -> None:
    """int64 milliseconds without time_unit: a SourceError naming the file, the column and
    int64, saying to set time_unit (read and count alike); never a window of 0 events."""
    path = _write(
        tmp_path / "lake" / HOUR10 / "part-0.parquet",
        {"event_id": ["a"], "ingested_at": pa.array([epoch_us(at("10:00:00")) // 1000])},
    )
    message = rf"parquet {path}: time column 'ingested_at' is int64: .*set time_unit"
    with pytest.raises(SourceError, match=message):
        parquet.read(_cfg(tmp_path / "lake"), W)
    with pytest.raises(SourceError, match=message):
        parquet.count(_cfg(tmp_path / "lake"), Window(W.start, W.start + timedelta(minutes=30)))


def test_iso_string_times_and_the_ones_that_are_no_time(tmp_path: Path) -> None:
    """Hour 10 holds strings: a "2026-11-20T10:00:00Z", b "2026-11-20T12:30:00+02:00"
    (10:30), c "2026-11-20 10:45:00" (no offset: the source's zone), d "garbage" (row 3),
    e "2026-11-20T11:00:00Z" (out), f null. In UTC, a b c are read; d is unreadable, named
    by file and row with its raw text, at the partition's start (10:00), and f is one null
    record there too. A read of 11:00-12:00 holds e alone and none of those records (their
    partition starts in the other window). In Europe/Paris c is 09:45 UTC (out)."""
    path = _write(
        tmp_path / "lake" / HOUR10 / "part-0.parquet",
        {
            "event_id": list("abcdef"),
            "ingested_at": pa.array(
                [
                    "2026-11-20T10:00:00Z",
                    "2026-11-20T12:30:00+02:00",
                    "2026-11-20 10:45:00",
                    "garbage",
                    "2026-11-20T11:00:00Z",
                    None,
                ]
            ),
        },
    )
    lake = tmp_path / "lake"
    read = parquet.read(_cfg(lake), W)
    assert _rows(read) == {"a": at("10:00:00"), "b": at("10:30:00"), "c": at("10:45:00")}
    assert [(b.where, b.reason, b.count, b.time) for b in read.bad_records] == [
        (f"{path} (1 rows)", "ingested_at is null: in no window", 1, at("10:00:00")),
        (f"{path} row 3", "bad ingested_at: 'garbage'", 1, at("10:00:00")),
    ]
    assert parquet.count(_cfg(lake), W) == 6  # hour 10 lies inside W: its footer counts
    later = Window(W.end, at("12:00:00"))
    assert _rows(parquet.read(_cfg(lake), later)) == {}  # e is in hour 10's file: not opened
    flat = tmp_path / "flat"
    _write(flat / "part-0.parquet", {"event_id": ["e"], "ingested_at": ["2026-11-20T11:00:00Z"]})
    assert _rows(parquet.read(_cfg(flat), later)) == {"e": at("11:00:00")}
    paris = parquet.read(_cfg(lake, timezone="Europe/Paris"), W)
    assert _rows(paris) == {"a": at("10:00:00"), "b": at("10:30:00")}


def test_naive_timestamps_are_wall_times_in_the_sources_zone(tmp_path: Path) -> None:
    """Naive timestamp[ms] in America/New_York (UTC-5 in November): a 04:59:59.999 (09:59:59.999
    UTC, out), b 05:00 (10:00, in), c 05:59:59.999 (in), d 06:00 (11:00, out), in a flat
    lake and one row group each: the filter's bounds are New York wall times. Read as UTC
    (the default), their wall times (04:59-06:00) are all before W."""
    walls = {"a": "04:59:59.999", "b": "05:00:00", "c": "05:59:59.999", "d": "06:00:00"}
    _write(
        tmp_path / "lake" / "part-0.parquet",
        {
            "event_id": list(walls),
            "ingested_at": pa.array(
                [at(t).replace(tzinfo=None) for t in walls.values()], pa.timestamp("ms")
            ),
        },
    )
    cfg = _cfg(tmp_path / "lake", timezone="America/New_York")
    assert _rows(parquet.read(cfg, W)) == {"b": at("10:00:00"), "c": at("10:59:59.999")}
    assert parquet.count(cfg, W) == 2
    assert _rows(parquet.read(_cfg(tmp_path / "lake"), W)) == {}


def test_uuid_and_integer_id_columns_read_as_canonical_text(tmp_path: Path) -> None:
    """IDs as fixed_size_binary(16) (one null), as Arrow's uuid type, and as int64: read as
    lowercase hyphenated text and decimal; the null one is unreadable, named by its time."""
    u1, u2 = uuid.UUID("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"), uuid.UUID(int=255)
    times = pa.array([at("10:01:00"), at("10:02:00")], pa.timestamp("us", tz="UTC"))
    raw = pa.array([u1.bytes, None], pa.binary(16))
    path = _write(tmp_path / "fsb" / HOUR10 / "p.parquet", {"event_id": raw, "ingested_at": times})
    read = parquet.read(_cfg(tmp_path / "fsb"), W)
    assert _rows(read) == {str(u1): at("10:01:00")}
    assert [(b.where, b.reason) for b in read.bad_records] == [
        (f"{path} row at 2026-11-20T10:02:00Z", "event_id is null")
    ]
    typed = pa.ExtensionArray.from_storage(pa.uuid(), pa.array([u1.bytes, u2.bytes], pa.binary(16)))
    _write(tmp_path / "ext" / HOUR10 / "p.parquet", {"event_id": typed, "ingested_at": times})
    assert _rows(parquet.read(_cfg(tmp_path / "ext"), W)) == {
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11": at("10:01:00"),
        "00000000-0000-0000-0000-0000000000ff": at("10:02:00"),
    }
    numbers = pa.array([42, -(2**63)], pa.int64())
    _write(tmp_path / "int" / HOUR10 / "p.parquet", {"event_id": numbers, "ingested_at": times})
    assert _rows(parquet.read(_cfg(tmp_path / "int"), W)) == {
        "42": at("10:01:00"),
        "-9223372036854775808": at("10:02:00"),
    }


def test_a_struct_id_column_is_an_error_naming_file_column_type(tmp_path: Path) -> None:
    """A struct ID column (it used to give a traceback and store nothing): a SourceError
    naming the file, the column and its type."""
    path = _write(
        tmp_path / "lake" / HOUR10 / "part-0.parquet",
        {
            "event_id": pa.array([{"id": "a", "v": 1}]),
            "ingested_at": pa.array([at("10:00:00")], pa.timestamp("us", tz="UTC")),
        },
    )
    message = rf"parquet {path}: ID column 'event_id' is struct<id: string, v: int64>"
    with pytest.raises(SourceError, match=message):
        parquet.read(_cfg(tmp_path / "lake"), W)


def test_files_that_disagree_on_the_id_type_are_read_with_a_warning(tmp_path: Path) -> None:
    """Hour 10 has four files of string IDs (s0..s3, e.g. "100") and one, part-4, of int64
    IDs (100, 101): every row is read, the integers as decimal text, and the read warns,
    naming part-4, int64 and string (in the field this was 100 silent orphans)."""
    times = pa.array([at("10:01:00"), at("10:02:00")], pa.timestamp("us", tz="UTC"))
    day = tmp_path / "lake" / HOUR10
    for i in range(4):
        _write(day / f"part-{i}.parquet", {"event_id": [f"s{i}a", f"s{i}b"], "ingested_at": times})
    odd = _write(day / "part-4.parquet", {"event_id": pa.array([100, 101]), "ingested_at": times})
    read = parquet.read(_cfg(tmp_path / "lake"), W)
    assert sorted(read.table["event_id"].to_pylist()) == [
        "100", "101", "s0a", "s0b", "s1a", "s1b", "s2a", "s2b", "s3a", "s3b",
    ]  # fmt: skip
    assert read.warnings == [
        f"event_id is int64 in 1 of 5 files ({odd}) but string in the others: read as "
        "decimal text there and text as is elsewhere, so its IDs match other stages only "
        "where those texts are equal"
    ]
    assert parquet.read(_cfg(tmp_path / "lake"), Window(W.end, at("12:00:00"))).warnings == []
