"""The `homeassistant:` section of hub.yaml: MQTT discovery and the REST events/notify sink."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator

from hub.config.base import ConfigModel, Duration, Secret

Severity = Literal["info", "warning", "critical"]


class DiscoverySettings(ConfigModel):
    """Retained MQTT discovery configs (per entity) and the state topics they point at."""

    enabled: bool = Field(True, description="Publish Home Assistant MQTT discovery and states.")
    prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix.")
    raw_sensors: Literal["non_esphome", "all", "none"] = Field(
        "non_esphome",
        description="Sensors for raw metrics too: non_esphome (devices ESPHome does not already announce), all, none. Derived metrics are always announced.",
    )
    state_interval: Duration = Field(
        1.0, description="At most one sensor state per device and metric this often (latest wins)."
    )
    expire_after: Duration = Field(
        600.0,
        description="Air-quality sensors go unavailable after this long without a state (0 = never).",
    )
    resync_interval: Duration = Field(
        30.0, description="How often known devices are re-read and new entities announced."
    )
    hub_interval: Duration = Field(10.0, description="How often the hub's health sensors update.")


class RestSettings(ConfigModel):
    """Home Assistant's REST API (homeassistant-api): alert events and notifications."""

    enabled: bool = Field(False, description="Fire events / call notify through the REST API.")
    url: str | None = Field(
        None, description="Base URL of the API, ending in /api (http://homeassistant:8123/api)."
    )
    token: Secret | None = Field(
        None, description="A long-lived access token (HA profile -> Security)."
    )
    fire_events: bool = Field(True, description="Fire an event on the HA bus per transition.")
    event_type: str = Field("hub_alert", description="Event type of those events.")
    notify_service: str | None = Field(
        None, description="e.g. notify.mobile_app_phone: called when an alert fires or resolves."
    )
    notify_severities: list[Severity] = Field(
        default_factory=lambda: ["warning", "critical"],  # type: ignore[arg-type]
        description="Severities that are sent to notify_service.",
    )
    timeout: Duration = Field(10.0, description="Per-request timeout.")
    retry_max: Duration = Field(60.0, description="Longest pause between retries (backoff cap).")
    queue_max: int = Field(
        1000, ge=1, description="Undelivered transitions kept; the oldest is dropped (counted)."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL")
        if not parsed.path.endswith("/api"):
            raise ValueError(
                f"{value!r} must end in /api (homeassistant-api needs it), e.g. {parsed.scheme}://{parsed.netloc}/api"
            )
        return value

    @field_validator("notify_service")
    @classmethod
    def _check_service(cls, value: str | None) -> str | None:
        if value is not None and (value.count(".") != 1 or not all(value.split("."))):
            raise ValueError(f"{value!r} must be domain.service, e.g. notify.mobile_app_phone")
        return value

    @model_validator(mode="after")
    def _needs_url_and_token(self) -> RestSettings:
        if self.enabled:
            if not self.url:
                raise ValueError("rest is enabled but has no url (http://HOST:8123/api)")
            if self.token is None or not self.token.get_secret_value().strip():
                raise ValueError("rest is enabled but has no token (a long-lived access token)")
        return self


class HomeAssistantConfig(ConfigModel):
    """The `homeassistant:` section."""

    discovery: DiscoverySettings = Field(
        default_factory=DiscoverySettings, description="MQTT discovery."
    )
    rest: RestSettings = Field(default_factory=RestSettings, description="REST events/notify.")
