"""Parsing of durations and instants; everything recon handles is UTC."""

import math
import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


# No setting of recon needs a duration of a century; past it datetime arithmetic overflows.
MAX_DURATION = timedelta(days=36_500)


def parse_duration(text: str | int | float) -> timedelta:
    """Parse '90s', '30m', '1h', '2d', '250ms' (a bare number is seconds), up to a century."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ValueError(f"not a duration: {text!r} (use e.g. 250ms, 90s, 30m, 1h, 2d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or abs(seconds) > MAX_DURATION.total_seconds():
        raise ValueError(f"not a duration of at most {MAX_DURATION.days} days: {text!r}")
    return timedelta(seconds=seconds)


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
