"""Why an incoming message or frame was refused.

A codec raises `Rejected(reason, detail)`; the ingest core counts it under `reason` (a short
stable key, shown in `/metrics` and `hub status`) and keeps the raw payload as a dead letter
with the human `detail`. Reasons are a closed set so dashboards and alerts can rely on them.
"""

from __future__ import annotations

from typing import Final

INVALID_UTF8: Final = "invalid_utf8"
INVALID_JSON: Final = "invalid_json"
NOT_AN_OBJECT: Final = "not_an_object"
NOT_A_NUMBER: Final = "not_a_number"
MISSING_FIELD: Final = "missing_field"
BAD_TIMESTAMP: Final = "timestamp_out_of_range"
TOO_LARGE: Final = "payload_too_large"
UNKNOWN_TOPIC: Final = "unknown_topic"
BAD_TOPIC: Final = "invalid_topic"
UNKNOWN_SENSOR: Final = "unknown_sensor"
BAD_DISCOVERY: Final = "invalid_discovery"
BAD_NAME: Final = "invalid_name"
BAD_FRAME: Final = "invalid_frame"

REASONS: Final = (
    INVALID_UTF8, INVALID_JSON, NOT_AN_OBJECT, NOT_A_NUMBER, MISSING_FIELD, BAD_TIMESTAMP,
    TOO_LARGE, UNKNOWN_TOPIC, BAD_TOPIC, UNKNOWN_SENSOR, BAD_DISCOVERY, BAD_NAME, BAD_FRAME,
)  # fmt: skip


class Rejected(ValueError):
    """A message that cannot become readings. `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
