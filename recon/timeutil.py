"""Parsing of durations and instants; everything recon handles is UTC."""

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float) -> timedelta:
    """Parse '90s', '30m', '1h', '2d', '250ms' (a bare number is seconds)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return timedelta(seconds=text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 250ms, 90s, 30m, 1h, 2d)")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_instant(text: str | datetime) -> datetime:
    """Parse an ISO 8601 instant; a value without an offset is taken as UTC."""
    if isinstance(text, datetime):
        value = text
    else:
        raw = text.strip()
        if raw.endswith(("Z", "z")):
            raw = raw[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    return as_utc(value)


def as_utc(value: datetime) -> datetime:
    """Return `value` as an aware UTC datetime (naive values are UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime) -> str:
    """ISO 8601 UTC with a Z suffix, as used in every report."""
    return as_utc(value).isoformat().replace("+00:00", "Z")


def epoch_us(value: datetime) -> int:
    """Microseconds since the epoch, exact (no float rounding)."""
    delta = as_utc(value) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch (Kafka record timestamps), floored."""
    return epoch_us(value) // 1000
