"""The `influx:` section: forwarding readings to InfluxDB (v2 write API) through the outbox.

influx:
  enabled: true
  url: http://influxdb:8086          # InfluxDB 2, 1.8+ (v2 compatibility) or 3
  org: home
  bucket: hub
  # token: set HUB_INFLUX__TOKEN in the environment rather than here
  precision: ms
  locations: {airq-1: living room, airq-2: bedroom}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hub.config.base import ByteSize, ConfigModel, Duration, Secret


class InfluxSettings(ConfigModel):
    """InfluxDB forwarding: every stored reading is queued in the store's outbox and sent."""

    enabled: bool = Field(False, description="Forward readings to InfluxDB.")
    url: str = Field("http://localhost:8086", description="InfluxDB base URL (http or https).")
    org: str = Field("", description="Organisation (InfluxDB 2); ignored by 1.8 and 3.")
    bucket: str = Field(
        "hub", description="Bucket (InfluxDB 2/3) or 'database/retention' (InfluxDB 1.8)."
    )
    token: Secret | None = Field(
        None, description="API token with write access to the bucket ('user:password' for 1.8)."
    )
    precision: Literal["ms", "ns"] = Field(
        "ms", description="Timestamp precision written; readings are millisecond-exact."
    )
    verify_tls: bool = Field(True, description="Check the server's TLS certificate.")
    timeout: Duration = Field(10.0, description="Time allowed for one write request.")
    batch_size: int = Field(5000, ge=1, le=100_000, description="Most points in one write.")
    linger: Duration = Field(
        1.0, description="How long a partial batch waits for more readings before it is sent."
    )
    max_outbox: ByteSize = Field(
        1024**3,
        description="Disk budget of the outbox (undelivered readings). When full, the oldest are kept and new readings are stored but not queued, loudly.",
    )
    min_free_disk: ByteSize = Field(
        256 * 1024**2,
        description="Stop queueing (loudly) when the data disk has less free space than this.",
    )
    retry_min: Duration = Field(0.5, description="First retry delay after a transient failure.")
    retry_max: Duration = Field(
        60.0, description="Longest retry delay (exponential backoff with jitter)."
    )
    probe_interval: Duration = Field(
        2.0,
        gt=0,
        description="While the server is unreachable, ask its /health (or /ping) this often and send again as soon as it answers.",
    )
    auth_retry: Duration = Field(
        300.0,
        description="After 401/403 forwarding pauses; it tries again this often (the token may be fixed server-side).",
    )
    unknown_measurement: str = Field(
        "other", description="Measurement for metrics that are not in the hub's catalog."
    )
    locations: dict[str, str] = Field(
        default_factory=dict,
        description="Device name -> location (room) written as the `location` tag.",
    )
