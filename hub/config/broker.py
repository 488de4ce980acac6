"""The `broker:` section: which MQTT broker the hub talks to, and how."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from hub.config.base import ConfigModel, Duration, Secret


class TlsConfig(ConfigModel):
    """TLS towards the broker (used with an `mqtts://` URL or `enabled: true`)."""

    enabled: bool = Field(False, description="Use TLS even with an mqtt:// URL.")
    ca_file: Path | None = Field(
        None, description="CA bundle that signed the broker's certificate; system CAs when empty."
    )
    cert_file: Path | None = Field(None, description="Client certificate for mutual TLS.")
    key_file: Path | None = Field(None, description="Private key of the client certificate.")
    insecure: bool = Field(
        False, description="Skip hostname verification (self-signed lab brokers only)."
    )

    @model_validator(mode="after")
    def client_cert_needs_key(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be given together")
        return self


class ManagedBrokerConfig(ConfigModel):
    """The private Mosquitto the hub starts when no broker URL is configured."""

    binary: str = Field(
        "mosquitto", description="Mosquitto executable (name on PATH or a full path)."
    )
    bind: str = Field(
        "127.0.0.1",
        description="Address it listens on; 0.0.0.0 lets ESPHome nodes on the LAN connect.",
    )
    port: int = Field(1883, ge=1, le=65535, description="Port it listens on.")
    allow_anonymous: bool = Field(
        True,
        description="Accept clients without credentials (the loopback demo default; only "
        "with a loopback bind, and ignored when password_file is set).",
    )
    password_file: Path | None = Field(
        None,
        description="Mosquitto password file written by `hub device` (e.g. hub-data/mosquitto/passwd). "
        "With it, every client logs in, each login is its client id on the listener above "
        "(a device cannot take over another client's session), and the hub connects on hub_port.",
    )
    acl_file: Path | None = Field(
        None, description="Mosquitto ACL file written by `hub device` (used with password_file)."
    )
    hub_port: int = Field(
        1884,
        ge=1,
        le=65535,
        description="Loopback port for the hub's own connections when password_file is set "
        "(they share the hub's login, so they keep their own client ids).",
    )
    restart_delay: Duration = Field(2.0, description="Pause before restarting it after it died.")

    @model_validator(mode="after")
    def lan_needs_logins(self) -> ManagedBrokerConfig:
        loopback = self.bind in ("127.0.0.1", "::1", "localhost")
        if not loopback and self.password_file is None and self.allow_anonymous:
            raise ValueError(
                f"broker.managed.bind {self.bind} with anonymous clients lets anyone on the LAN "
                "connect with any client id, the hub's included, and take its session: set "
                "broker.managed.password_file (written by `hub device add`) or bind 127.0.0.1"
            )
        if self.password_file is not None and self.hub_port == self.port:
            raise ValueError("broker.managed.hub_port must differ from broker.managed.port")
        return self


class BrokerConfig(ConfigModel):
    """MQTT connection of the ingest core. Leave `url` empty for the managed private broker."""

    url: str | None = Field(
        None,
        description="mqtt://host:port or mqtts://host:port of your broker; empty = start a managed Mosquitto.",
    )
    username: str | None = Field(None, description="MQTT user name.")
    password: Secret | None = Field(None, description="MQTT password (or HUB_BROKER__PASSWORD).")
    client_id: str | None = Field(
        None,
        description="Client id; must be stable for the persistent session. Default: hub-<hostname>.",
    )
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description="MQTT version; auto tries 5 and falls back to 3.1.1."
    )
    keepalive: int = Field(30, ge=5, le=3600, description="Keep-alive interval in seconds.")
    session_expiry: Duration = Field(
        86400.0,
        description="How long the broker keeps our session and queued QoS 1 messages while we are away (MQTT 5).",
    )
    receive_maximum: int = Field(
        10000,
        ge=1,
        le=65535,
        description="Unacknowledged QoS 1 messages the broker may send us at once (MQTT 5).",
    )
    shared_group: str | None = Field(
        None,
        description="Subscribe as $share/<group>/... so several hub processes split one stream (MQTT 5).",
    )
    topic_prefix: str = Field(
        "hub", description="Prefix of the hub's own topics (readings, availability, stats)."
    )
    reconnect_min: Duration = Field(1.0, description="First reconnect delay.")
    reconnect_max: Duration = Field(60.0, description="Reconnect delay cap (exponential backoff).")
    tls: TlsConfig = Field(default_factory=TlsConfig, description="TLS options.")
    managed: ManagedBrokerConfig = Field(
        default_factory=ManagedBrokerConfig, description="The managed private Mosquitto."
    )

    @field_validator("url")
    @classmethod
    def valid_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise ValueError("broker url must look like mqtt://host:1883 or mqtts://host:8883")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def valid_prefix(cls, value: str) -> str:
        if (
            not value
            or any(c in value for c in "#+")
            or value.startswith("/")
            or value.endswith("/")
        ):
            raise ValueError(
                "topic_prefix must be a plain topic like 'hub' (no wildcards, no leading/trailing '/')"
            )
        return value

    @model_validator(mode="after")
    def shared_needs_v5(self) -> BrokerConfig:
        if self.shared_group and self.protocol == "3.1.1":
            raise ValueError("shared_group needs MQTT 5: set protocol to 5 or auto")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be below reconnect_min")
        return self

    @property
    def is_managed(self) -> bool:
        return self.url is None

    @property
    def host_port_tls(self) -> tuple[str, int, bool]:
        if self.url is None:
            if self.managed.password_file is not None:  # the hub's own loopback listener
                return "127.0.0.1", self.managed.hub_port, False
            host = "127.0.0.1" if self.managed.bind in ("0.0.0.0", "::") else self.managed.bind
            return host, self.managed.port, False
        parts = urlsplit(self.url)
        tls = parts.scheme in ("mqtts", "ssl") or self.tls.enabled
        return parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883), tls
