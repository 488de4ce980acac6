"""Points in time as people write them, shared by the CLI and the web API.

`10m`, `1h 30m`, `7d` mean that long before now; `2026-12-01T10:00` (or a date, or a time
with an offset or `Z`) is an ISO 8601 time, read in this machine's local time zone when it
has no offset. Pure: `now` is an argument.
"""

from __future__ import annotations

from datetime import datetime

from hub.config.base import parse_duration

__all__ = ["TIME_HELP", "parse_time"]

TIME_HELP = "a duration ago like 10m, 1h 30m or 7d, or an ISO time like 2026-12-01T10:00"


def parse_time(value: str, now: float) -> int:
    """`value` as Unix milliseconds, with `now` in Unix seconds; ValueError if it is neither
    a duration nor an ISO time."""
    text = value.strip()
    try:
        return int((now - parse_duration(text)) * 1000)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not a time: use {TIME_HELP}") from None
    return int(parsed.timestamp() * 1000)
