"""Config of the ESPHome native-API bridge: the `esphome_api:` section of hub.yaml.

esphome_api:
  devices:
    - name: livingroom-aq          # the node's ESPHome name (also the hub device name)
      host: 192.168.1.40
      encryption_key: "base64 key from the node's api: encryption: key:"
    - name: office-aq
      host: office-aq.local
      prefer: mqtt                 # fed over MQTT: the bridge leaves it alone
  mdns: false                      # also browse _esphomelib._tcp.local. for nodes
  reconnect_max_backoff: 60s
"""

from __future__ import annotations

import binascii
from typing import Literal

from pydantic import Field, field_validator, model_validator

from hub.config.base import ConfigModel, Duration, Secret

__all__ = ["EsphomeApiSettings", "EsphomeDeviceSettings"]

# The same shape hub_json.DEVICE_RE accepts; ESPHome node names are [a-z0-9-] anyway.
_DEVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class EsphomeDeviceSettings(ConfigModel):
    """One ESPHome node the bridge connects to."""

    name: str = Field(
        pattern=_DEVICE_NAME_PATTERN,
        title="Device name",
        description="The node's ESPHome `name:`; readings are stored under it (hub/readings/<name>).",
    )
    host: str = Field(
        min_length=1,
        title="Host",
        description="IP address or host name (`<name>.local` works when mDNS resolves here).",
    )
    port: int = Field(
        default=6053, ge=1, le=65535, title="Port", description="Native API port (`api: port:`)."
    )
    encryption_key: Secret | None = Field(
        default=None,
        title="Encryption key",
        description="The node's `api: encryption: key:` (base64 of 32 bytes); empty for a plaintext node.",
    )
    prefer: Literal["api", "mqtt"] = Field(
        default="api",
        title="Preferred path",
        description=(
            "Which path feeds this node's readings when it speaks both MQTT and the native API: "
            "`api` (this bridge; the MQTT ingest should ignore the node) or `mqtt` (the bridge skips it)."
        ),
    )
    check_name: bool = Field(
        default=True,
        title="Check the node's name",
        description="Refuse a node at this address whose ESPHome name differs (an IP reassigned by DHCP).",
    )

    @field_validator("encryption_key")
    @classmethod
    def _key_is_32_bytes(cls, value: Secret | None) -> Secret | None:
        if value is None:
            return None
        raw = value.get_secret_value().strip()
        if not raw:
            return None
        try:
            decoded = binascii.a2b_base64(raw, strict_mode=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                "encryption_key is not base64 (copy `api: encryption: key:` from the node's YAML)"
            ) from None
        if len(decoded) != 32:
            raise ValueError(
                f"encryption_key decodes to {len(decoded)} bytes; ESPHome keys are 32 bytes of base64"
            )
        return Secret(raw)


class EsphomeApiSettings(ConfigModel):
    """The native-API bridge: which nodes, how to find them, how hard to retry."""

    devices: list[EsphomeDeviceSettings] = Field(
        default_factory=list,
        title="Devices",
        description="ESPHome nodes to connect to over the native API (TCP 6053).",
    )
    mdns: bool = Field(
        default=False,
        title="mDNS discovery",
        description=(
            "Also browse `_esphomelib._tcp.local.` and connect to nodes not listed in `devices` "
            "(plaintext only: a node that needs a key must be listed)."
        ),
    )
    reconnect_max_backoff: Duration = Field(
        default=60.0,
        ge=1.0,
        le=60.0,
        title="Longest wait between reconnects",
        description=(
            "aioesphomeapi waits 1.8^n s between attempts (at most 60 s); the bridge retries no later "
            "than this after a failure. A wrong key is always retried after 60 s."
        ),
    )
    keepalive: Duration = Field(
        default=20.0,
        ge=1.0,
        le=300.0,
        title="Keepalive",
        description="Ping interval; a node that misses pongs for 4.5x this is treated as gone.",
    )
    queue_size: int = Field(
        default=10_000,
        ge=10,
        le=1_000_000,
        title="Publish queue size",
        description="Messages waiting for the broker; when full the oldest is dropped and counted.",
    )

    @model_validator(mode="after")
    def _names_are_unique(self) -> EsphomeApiSettings:
        seen: set[str] = set()
        for device in self.devices:
            if device.name in seen:
                raise ValueError(f"device {device.name!r} is listed twice in esphome_api.devices")
            seen.add(device.name)
        return self

    def api_fed_devices(self) -> frozenset[str]:
        """Nodes the bridge feeds: the MQTT ingest should skip their ESPHome topics."""
        return frozenset(d.name for d in self.devices if d.prefer == "api")

    def mqtt_fed_devices(self) -> frozenset[str]:
        """Nodes marked `prefer: mqtt`: the bridge does not connect to them."""
        return frozenset(d.name for d in self.devices if d.prefer == "mqtt")
