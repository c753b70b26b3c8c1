"""`files` reader: a CSV line with an unterminated quote, a JSON-lines ID that is not
UTF-8, where each bad line counts, and epoch or zoned times in logs."""

from __future__ import annotations

import gzip
import json
from datetime import timedelta
from pathlib import Path

import pytest

from recon.model import Window
from recon.sources import files
from recon.timeutil import epoch_ms

from .helpers import W, at


def _cfg(path: Path, **options: object) -> files.Config:
    return files.Config(name="gw", source="files", path=str(path), **options)


def _bad(read) -> list[tuple]:
    return [(b.where, b.reason, b.count, b.time) for b in read.bad_records]


def test_csv_unterminated_quote_is_one_bad_line_not_the_rest_of_the_file(
    tmp_path: Path,
) -> None:
    """500 lines: the header and 499 receipts e1..e499, e_i at 10:00 + i seconds, with a
    user agent (quoted, with a comma inside, on every 50th line). Line 137 (e136) opens a
    quote it never closes. Exactly that line is unreadable ("unterminated quote", at the
    time of line 136, the previous readable line); the 498 others are read, each at its own
    time. At HEAD the quote swallowed the rest of the file into e136's field: e137..e499
    (363 events) vanished with nothing unreadable. A gzipped copy reads the same."""
    lines = ["event_id,received_at,user_agent"]
    for i in range(1, 500):
        t = (at("10:00:00") + timedelta(seconds=i)).isoformat()
        agent = '"ua 136' if i == 136 else f'"ua, {i}"' if i % 50 == 0 else f"ua {i}"
        lines.append(f"e{i},{t},{agent}")
    text = "\n".join(lines) + "\n"
    log = tmp_path / "gw.csv"
    log.write_text(text)
    zipped = tmp_path / "gw.csv.gz"
    zipped.write_bytes(gzip.compress(text.encode()))
    for path in (log, zipped):
        read = files.read(_cfg(path), W)
        assert read.table["event_id"].to_pylist() == [f"e{i}" for i in range(1, 500) if i != 136]
        times = read.table["stage_time"].to_pylist()
        assert times == [at("10:00:00") + timedelta(seconds=i) for i in range(1, 500) if i != 136]
        assert _bad(read) == [(f"{path}:137", "unterminated quote", 1, at("10:02:15"))]


def test_csv_bad_lines_are_each_named_and_placed(tmp_path: Path) -> None:
    """Lines: 1 header; 2 a (10:00); 3 a quote left open; 4 a carriage return inside the
    line; 5 a field too many; 6 b (10:10) with a quoted field holding escaped quotes; 7 a bad
    time; 8 blank; 9 c (11:30). Each bad line is named and counts at the previous readable
    line's time (a, or b for line 7), in W; c is the next hour's. Escaped quotes come in
    pairs: line 6 is read."""
    log = tmp_path / "gw.csv"
    log.write_bytes(
        b"event_id,received_at,note\n"
        b"a,2026-11-20T10:00:00Z,x\n"
        b'q,2026-11-20T10:01:00Z,"open\n'
        b"r,2026-11-20T10:02:00Z,c\rr\n"
        b"s,2026-11-20T10:03:00Z,x,extra\n"
        b'b,2026-11-20T10:10:00Z,"x ""y"""\n'
        b"t,yesterday,x\n"
        b"\n"
        b"c,2026-11-20T11:30:00Z,x\n"
    )
    read = files.read(_cfg(log), W)
    assert read.table["event_id"].to_pylist() == ["a", "b"]
    assert _bad(read) == [
        (f"{log}:3", "unterminated quote", 1, at("10:00:00")),
        (f"{log}:4", "a carriage return inside the line", 1, at("10:00:00")),
        (f"{log}:5", "4 fields, expected 3", 1, at("10:00:00")),
        (f"{log}:7", "bad received_at: 'yesterday'", 1, at("10:10:00")),
    ]
    later = files.read(_cfg(log), Window(W.end, at("12:00:00")))
    assert (later.table["event_id"].to_pylist(), later.bad_records) == (["c"], [])


def test_jsonl_id_that_is_not_utf8_is_unreadable(tmp_path: Path) -> None:
    """Four lines: a; an ID with the byte 0xff (at HEAD: read as "b\\ufffd", a lost event);
    c, whose user agent (not a configured field) holds 0xfe; d. The bad ID is unreadable,
    named by its line, at its own time; a, c and d are read exactly."""
    log = tmp_path / "gw.jsonl"
    log.write_bytes(
        b'{"event_id": "a", "received_at": "2026-11-20T10:00:00Z"}\n'
        b'{"event_id": "b\xff", "received_at": "2026-11-20T10:01:00Z"}\n'
        b'{"event_id": "c", "received_at": "2026-11-20T10:02:00Z", "ua": "\xfe"}\n'
        b'{"event_id": "d", "received_at": "2026-11-20T10:03:00Z"}\n'
    )
    read = files.read(_cfg(log), W)
    assert read.table["event_id"].to_pylist() == ["a", "c", "d"]
    assert read.table["stage_time"].to_pylist() == [at("10:00:00"), at("10:02:00"), at("10:03:00")]
    assert _bad(read) == [(f"{log}:2", "event_id is not valid UTF-8", 1, at("10:01:00"))]


NO_NAME = "Expecting property name enclosed in double quotes"


def test_jsonl_bad_lines_count_at_their_neighbours_time_in_one_window(tmp_path: Path) -> None:
    """Lines: 1 not JSON (no previous readable line: the next one's time, 10:50); 2 x
    (10:50); 3 a time that does not parse (x's time); 4 a JSON array; 5 y (11:10); 6 no ID,
    own time 11:20; 7 blank; 8 an ID that is a JSON object, own time 11:25.
    Reads of 10:00-11:00 and 11:00-12:00 split them exactly by those times; a file with no
    readable time has its bad lines at no time (counted at midnight, by every read)."""
    log = tmp_path / "gw.jsonl"
    log.write_text(
        "{oops\n"
        '{"event_id": "x", "received_at": "2026-11-20T10:50:00Z"}\n'
        '{"event_id": "z", "received_at": "ten past"}\n'
        "[1, 2]\n"
        '{"event_id": "y", "received_at": "2026-11-20T11:10:00Z"}\n'
        '{"received_at": "2026-11-20T11:20:00Z"}\n'
        "\n"
        '{"event_id": {"k": 1}, "received_at": "2026-11-20T11:25:00Z"}\n'
    )
    first = files.read(_cfg(log), W)
    assert first.table["event_id"].to_pylist() == ["x"]
    assert _bad(first) == [
        (f"{log}:1", f"not JSON: {NO_NAME}", 1, at("10:50:00")),
        (f"{log}:3", "bad received_at: 'ten past'", 1, at("10:50:00")),
        (f"{log}:4", "not a JSON object", 1, at("10:50:00")),
    ]
    second = files.read(_cfg(log), Window(W.end, at("12:00:00")))
    assert second.table["event_id"].to_pylist() == ["y"]
    assert _bad(second) == [
        (f"{log}:6", "no event_id", 1, at("11:20:00")),
        (f"{log}:8", "event_id is a JSON object", 1, at("11:25:00")),
    ]
    hopeless = tmp_path / "hopeless.jsonl"
    hopeless.write_text('{"event_id": "q"}\nnot json\n')
    assert _bad(files.read(_cfg(hopeless), W)) == [
        (f"{hopeless}:1", "no received_at", 1, None),
        (f"{hopeless}:2", "not JSON: Expecting value", 1, None),
    ]


def test_epoch_and_zoned_times_and_integer_ids_in_logs(tmp_path: Path) -> None:
    """JSON lines with integer IDs (42, 43) and epoch-ms numbers (10:00, 11:00): with
    time_unit ms, 42 is read as "42" at 10:00 and 43 is out. Without time_unit each line
    is unreadable, saying to set it, and counts at the epoch its size suggests (10:00 in
    W, 11:00 in the next hour): never a silent empty window, nor the whole log an error.
    A CSV of epoch seconds as digits reads with time_unit s. A log of wall times in
    Europe/Paris: "11:30" without an offset is 10:30 UTC; with one, the offset wins."""
    log = tmp_path / "gw.jsonl"
    rows = [{"event_id": 42, "received_at": epoch_ms(at("10:00:00"))}]
    rows.append({"event_id": 43, "received_at": epoch_ms(at("11:00:00"))})
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = files.read(_cfg(log, time_unit="ms"), W)
    assert (read.table["event_id"].to_pylist(), read.bad_records) == (["42"], [])
    assert read.table["stage_time"].to_pylist() == [at("10:00:00")]
    unread = files.read(_cfg(log), W)
    hint = "(digits only: set time_unit to read epochs)"
    assert unread.table.num_rows == 0
    assert _bad(unread) == [
        (f"{log}:1", f"bad received_at: '{epoch_ms(at('10:00:00'))}' {hint}", 1, at("10:00:00"))
    ]
    later = files.read(_cfg(log), Window(W.end, at("12:00:00")))
    assert [(b.where, b.time) for b in later.bad_records] == [(f"{log}:2", at("11:00:00"))]

    csv = tmp_path / "gw.csv"
    seconds = epoch_ms(at("10:15:00")) // 1000
    csv.write_text(f"event_id,received_at\na,{seconds}\nb,{seconds + 3600}\n")
    assert files.read(_cfg(csv, time_unit="s"), W).table["event_id"].to_pylist() == ["a"]

    paris = tmp_path / "paris.jsonl"
    paris.write_text(
        '{"event_id": "p", "received_at": "2026-11-20 11:30:00"}\n'
        '{"event_id": "q", "received_at": "2026-11-20T11:30:00Z"}\n'
    )
    read = files.read(_cfg(paris, timezone="Europe/Paris"), W)
    assert read.table["event_id"].to_pylist() == ["p"]
    assert read.table["stage_time"].to_pylist() == [at("10:30:00")]


def test_an_unknown_timezone_is_a_config_error() -> None:
    """timezone is checked when the config is loaded: an unknown name, and the host's own."""
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus': give an IANA name"):
        files.Config(name="gw", source="files", path="x", timezone="Mars/Olympus")
    with pytest.raises(ValueError, match="timezone 'localtime' depends on the host"):
        files.Config(name="gw", source="files", path="x", timezone="localtime")
