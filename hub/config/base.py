"""Shared parts of the config schema: the strict base model, durations, sizes and secrets.

Every section of `hub.yaml` is a `ConfigModel`: unknown keys are errors (a typo must not be
silently ignored), every field has a default and a description, and durations and sizes are
written in human units ("30s", "5m", "64MiB") as ESPHome and Telegraf do.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, SecretStr

__all__ = ["ByteSize", "ConfigModel", "Duration", "Secret", "parse_bytes", "parse_duration"]


class ConfigModel(BaseModel):
    """Base of every config section: strict keys, validated on assignment, documented fields."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h|d|w)?\s*$")


def parse_duration(value: Any) -> float:
    """Seconds from "250ms", "30s", "5m", "2h", "7d", "1w" or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '7d'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        total = 0.0
        parts = value.split()
        if not parts:
            raise ValueError("empty duration")
        for part in parts:  # "1h 30m"
            match = _DURATION_RE.match(part)
            if not match:
                raise ValueError(
                    f"invalid duration {value!r}: use a number with a unit, e.g. '500ms', '30s', '5m', '2h', '7d'"
                )
            total += float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
        return total
    raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '7d'")


_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: Any) -> int:
    """Bytes from "512KiB", "64MiB", "1GB" or a bare integer."""
    if isinstance(value, bool):
        raise ValueError("a size is a number of bytes or a string like '64MiB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str):
        match = _BYTES_RE.match(value)
        if match and match.group(2).lower() in _BYTE_UNITS:
            return int(float(match.group(1)) * _BYTE_UNITS[match.group(2).lower()])
    raise ValueError(f"invalid size {value!r}: use e.g. '512KiB', '64MiB', '2GiB'")


def _format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


Duration = Annotated[
    float, BeforeValidator(parse_duration), PlainSerializer(_format_duration, return_type=str)
]
"""Seconds as a float; written in config as "30s", "5m", "7d"."""

ByteSize = Annotated[int, BeforeValidator(parse_bytes)]
"""Bytes as an int; written in config as "64MiB"."""

Secret = SecretStr
"""A secret string: never printed in logs, `repr` or `hub config` output."""
