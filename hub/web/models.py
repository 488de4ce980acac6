"""Request and response bodies of the REST API (they are the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(ApiModel):
    error: str = Field(description="What went wrong, in words.")
    detail: Any | None = Field(None, description="Field-level details, when there are any.")


class DeviceOut(ApiModel):
    name: str
    source: str | None = Field(
        None, description="How the device reaches the hub (mqtt, esphome_api, serial, simulator)."
    )
    kind: str | None = Field(None, description="airq, rc, hub or other.")
    manufacturer: str | None = None
    model: str | None = None
    sw_version: str | None = None
    first_seen: int | None = Field(None, description="First reading, Unix ms.")
    last_seen: int | None = Field(None, description="Newest reading, Unix ms.")
    online: bool | None = Field(
        None, description="Last availability the device announced (None: never announced)."
    )
    availability_ts: int | None = Field(None, description="When `online` was announced, Unix ms.")
    metrics: list[str] = Field(default_factory=list, description="Metrics the device has reported.")


class MetricOut(ApiModel):
    name: str
    unit: str | None
    description: str
    family: str = Field(description="InfluxDB measurement the metric is written under.")
    device_class: str | None = None
    state_class: str | None = None
    precision: int | None = None


class QuerySeries(ApiModel):
    device: str
    metric: str
    tags: dict[str, str]
    unit: str | None
    source: str | None
    resolution: Literal["raw", "1m", "1h"] = Field(description="What the points were read from.")
    ts: list[int] = Field(description="Point times (Unix ms): a bucket's first sample or start.")
    mean: list[float]
    min: list[float] = Field(description="Lowest sample in each bucket (peaks survive).")
    max: list[float] = Field(description="Highest sample in each bucket (peaks survive).")
    count: list[int] = Field(description="Samples in each bucket.")


class QueryResult(ApiModel):
    metric: str
    from_ms: int
    to_ms: int
    max_points: int
    series: list[QuerySeries]


class LatestValue(ApiModel):
    device: str
    metric: str
    tags: dict[str, str]
    unit: str | None
    value: float | None
    ts: int | None


class AlertOut(BaseModel):
    """An alert as the alert engine describes it (fields beyond these pass through)."""

    model_config = ConfigDict(extra="allow")

    id: int
    rule: str | None = None
    device: str | None = None
    metric: str | None = None
    severity: str | None = Field(None, description="critical, warning or info.")
    state: str | None = Field(None, description="firing or resolved.")
    value: float | None = None
    message: str | None = None
    started_ms: int | None = None
    resolved_ms: int | None = None
    acknowledged_by: str | None = None
    acknowledged_ms: int | None = None
    silenced_until_ms: int | None = None


class AcknowledgeRequest(ApiModel):
    by: str = Field("dashboard", min_length=1, max_length=100, description="Who acknowledges.")


class SilenceRequest(ApiModel):
    alert_id: int | None = Field(
        None, ge=0, lt=2**63, description="Silence this alert (its rule on its device)..."
    )
    rule: str | None = Field(
        None, min_length=1, max_length=200, description="...or this rule on every device."
    )
    duration_s: float = Field(
        gt=0, le=30 * 86400, description="How long to hold back notifications; 0 < s <= 30 days."
    )
    by: str = Field("dashboard", min_length=1, max_length=100, description="Who silences.")


class SilenceResult(ApiModel):
    until_ms: int
    alerts: list[AlertOut] = Field(description="Firing alerts the silence touched.")


class SessionAlertOut(ApiModel):
    """An alert of the session's device that was firing at some time during the session."""

    id: int
    rule: str
    severity: str
    state: str = Field(description="firing or resolved (now).")
    message: str
    started_ms: int
    resolved_ms: int | None = None


class SessionOut(ApiModel):
    id: str
    vehicle: str
    device: str
    start_ms: int
    end_ms: int
    duration_s: float
    max_speed_kmh: float | None = None
    max_current_a: float | None = None
    min_cell_voltage_load: float | None = None
    peak_esc_temperature: float | None = None
    peak_motor_temperature: float | None = None
    peak_pack_temperature: float | None = None
    consumed_mah: float | None = None
    energy_wh: float | None = None
    distance_km: float | None = None
    alerts: list[SessionAlertOut] = Field(
        default_factory=list,
        description="Alerts of the device that fired before the session ended and were not resolved before it started.",
    )


class DeadLetterOut(ApiModel):
    id: int
    received_ts: int
    source: str
    topic: str | None
    reason: str
    detail: str
    payload_bytes: int | None = Field(description="Size of the payload as received.")
    payload_truncated: bool = Field(
        False,
        description="Only the first store.dead_letters.max_payload bytes were kept (not replayable).",
    )
    replayed_ts: int | None


class DeadLetterDetail(DeadLetterOut):
    payload_sha256: str | None = Field(
        None, description="SHA-256 of the whole payload as received."
    )
    payload_preview: str = Field(
        description="The first 4 KiB of the payload as text (bad bytes replaced)."
    )


class ReplayRequest(ApiModel):
    ids: list[Annotated[int, Field(ge=0, lt=2**63)]] = Field(
        default_factory=list, max_length=1000, description="Dead letters to replay."
    )
    reason: str | None = Field(
        None, max_length=100, description="Or: every not yet replayed one with this reason."
    )
    limit: int = Field(1000, ge=1, le=1000, description="Most dead letters replayed by `reason`.")


class ReplayFailure(ApiModel):
    id: int
    reason: str
    detail: str


class ReplayResult(ApiModel):
    replayed: int = Field(description="Dead letters decoded and stored this time.")
    readings: int = Field(description="Readings those carried.")
    failed: list[ReplayFailure] = Field(description="Ones that still do not decode, with why.")


class PurgeRequest(ApiModel):
    reason: str | None = Field(
        None, max_length=100, description="Only this reason (all when empty)."
    )
    before_ms: int | None = Field(
        None, ge=0, lt=2**63, description="Only ones received before this time (Unix ms)."
    )


class PurgeResult(ApiModel):
    purged: int


class PartHealth(ApiModel):
    status: Literal["ok", "degraded"]
    reason: str = Field("", description="What is wrong, in words (empty when ok).")


class Health(ApiModel):
    status: Literal["ok", "degraded"]
    reasons: list[str] = Field(
        default_factory=list, description="One line per degraded part: 'part: what is wrong'."
    )
    parts: dict[str, PartHealth] = Field(
        default_factory=dict,
        description="Each part on its own: broker, store (ingest commits), InfluxDB forward, Home Assistant REST, tasks.",
    )
    version: str
    uptime_s: float
    broker: str = Field(description="State of the hub's MQTT connection.")
    messages_per_s: float
    readings_stored: int
    rejected_total: int
    live_clients: int
    alerts_engine: bool = Field(description="Whether an alert engine is running.")
