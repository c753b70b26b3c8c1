"""`files` reader: JSON-lines and CSV gateway logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from recon.errors import SourceError
from recon.sources import files

from .helpers import W, at


def test_jsonl_with_bad_lines(tmp_path: Path) -> None:
    """5 lines: 2 in the window (one exactly at start, one with a +02:00 offset), one at end
    (out), one not JSON (line 3), one without an id (line 5): both counted with their line."""
    log = tmp_path / "gateway-1.jsonl"
    log.write_text(
        '{"event_id": "a", "received_at": "2026-11-20T10:00:00Z"}\n'
        '{"event_id": "b", "received_at": "2026-11-20T12:30:00+02:00", "x": 1}\n'
        "{not json\n"
        '{"event_id": "c", "received_at": "2026-11-20T11:00:00Z"}\n'
        '{"received_at": "2026-11-20T10:40:00Z"}\n'
    )
    cfg = files.Config(name="gw", source="files", path=str(tmp_path / "*.jsonl"))
    read = files.read(cfg, W)
    assert read.table.column("event_id").to_pylist() == ["a", "b"]
    assert read.table.column("stage_time").to_pylist() == [at("10:00:00"), at("10:30:00")]
    assert sorted(b.where for b in read.bad_records) == [f"{log}:3", f"{log}:5"]


def test_csv(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(
        "event_id,received_at,status\n"
        "a,2026-11-20 10:15:00,200\n"
        "b,2026-11-20 09:15:00,200\n"
        ",2026-11-20 10:16:00,200\n"
    )
    cfg = files.Config(name="gw", source="files", path=str(tmp_path / "*.csv"))
    read = files.read(cfg, W)
    assert read.table.column("event_id").to_pylist() == ["a"]
    assert [b.where for b in read.bad_records] == [f"{tmp_path / 'a.csv'}:4"]


def test_no_file_is_an_error(tmp_path: Path) -> None:
    cfg = files.Config(name="gw", source="files", path=str(tmp_path / "*.jsonl"))
    with pytest.raises(SourceError, match="no file matches"):
        files.read(cfg, W)


def test_csv_rows_with_wrong_field_counts_are_counted_by_line(tmp_path: Path) -> None:
    """6 rows: a (10:00, in), a row with an extra field (line 3), c (10:30, in), a row with one
    field (line 5), d without an id (line 6), e (11:00, out). Two in the window, three bad,
    each named by its line; a file without the configured time column is a SourceError."""
    log = tmp_path / "gw.csv"
    log.write_text(
        "event_id,received_at\n"
        "a,2026-11-20T10:00:00Z\n"
        "b,2026-11-20T10:10:00Z,oops\n"
        "c,2026-11-20T10:30:00Z\n"
        "lonely\n"
        ",2026-11-20T10:40:00Z\n"
        "e,2026-11-20T11:00:00Z\n"
    )
    cfg = files.Config(name="gw", source="files", path=str(log))
    read = files.read(cfg, W)
    assert read.table.column("event_id").to_pylist() == ["a", "c"]
    assert read.unreadable == 3
    assert sorted((b.where, b.reason) for b in read.bad_records) == [
        (f"{log}:3", "3 fields, expected 2"),
        (f"{log}:5", "1 fields, expected 2"),
        (f"{log}:6", "no event_id"),
    ]
    (tmp_path / "other.csv").write_text("event_id,when\nx,2026-11-20T10:00:00Z\n")
    other = files.Config(name="gw", source="files", path=str(tmp_path / "other.csv"))
    with pytest.raises(SourceError, match=r"other\.csv.*received_at"):
        files.read(other, W)


def test_bad_rows_are_named_by_physical_line_past_blank_lines(tmp_path: Path) -> None:
    """Arrow skips blank lines. CSV: header, a, blank, a row with an extra field (line 4), a
    CRLF blank line, a row without an id (line 6). JSON-lines: a, blank, blank, a line
    without an id (line 4). Each bad row is named by the line an editor shows."""
    csv_log = tmp_path / "gw.csv"
    csv_log.write_bytes(
        b"event_id,received_at\na,2026-11-20T10:00:00Z\n\n"
        b"b,2026-11-20T10:00:01Z,extra\n\r\n,2026-11-20T10:00:02Z\n"
    )
    read = files.read(files.Config(name="gw", source="files", path=str(csv_log)), W)
    assert read.table.column("event_id").to_pylist() == ["a"]
    assert sorted(b.where for b in read.bad_records) == [f"{csv_log}:4", f"{csv_log}:6"]
    jsonl_log = tmp_path / "gw.jsonl"
    jsonl_log.write_text(
        '{"event_id": "a", "received_at": "2026-11-20T10:00:00Z"}\n\n\n'
        '{"received_at": "2026-11-20T10:05:00Z"}\n'
    )
    read = files.read(files.Config(name="gw", source="files", path=str(jsonl_log)), W)
    assert read.table.column("event_id").to_pylist() == ["a"]
    assert [b.where for b in read.bad_records] == [f"{jsonl_log}:4"]
