"""The `ingest:` section: what the hub subscribes to and how it turns messages into readings."""

from __future__ import annotations

from pydantic import Field, field_validator

from hub.config.base import ByteSize, ConfigModel, Duration


class MappingValue(ConfigModel):
    """One value taken out of a JSON payload of a mapped topic."""

    path: str = Field(
        ..., description="Dotted path into the JSON object, e.g. 'sensors.temp' or 'values.0'."
    )
    unit: str | None = Field(None, description="Unit to record; the catalog's unit when empty.")
    scale: float = Field(1.0, description="Multiply the value by this (e.g. 0.001 for mV -> V).")


class TopicMapping(ConfigModel):
    """A user-defined mapping of an arbitrary JSON topic (Zigbee2MQTT, Tasmota, your own) to readings."""

    topic: str = Field(
        ..., description="Subscription filter, e.g. 'zigbee2mqtt/+' (MQTT wildcards allowed)."
    )
    device: str = Field(
        ...,
        description="Device name; '{1}' is replaced by topic level 1 (0-based), e.g. '{1}' for zigbee2mqtt/<name>.",
    )
    values: dict[str, MappingValue] = Field(
        ..., description="metric name -> where to find its value."
    )
    timestamp_path: str | None = Field(
        None, description="Path of a Unix-seconds or ISO-8601 timestamp; receive time when empty."
    )

    @field_validator("values")
    @classmethod
    def some_values(cls, value: dict[str, MappingValue]) -> dict[str, MappingValue]:
        if not value:
            raise ValueError("a mapping needs at least one value")
        return value


class EsphomeMqttConfig(ConfigModel):
    """ESPHome's own MQTT topics."""

    enabled: bool = Field(
        True, description="Ingest ESPHome state topics (<node>/sensor/<object_id>/state)."
    )
    topic_prefixes: list[str] = Field(
        ["+"],
        description="Filters that match a node's topic_prefix; '+' matches the default <node>.",
    )
    discovery_prefix: str = Field(
        "homeassistant", description="Where ESPHome publishes its retained discovery configs."
    )
    metric_map: dict[str, str] = Field(
        default_factory=dict,
        description="object_id -> metric name overrides, e.g. {pm_2_5um: pm2_5}.",
    )
    accept_unknown: bool = Field(
        True,
        description="Store sensors the catalog does not know under their object_id when discovery gave their unit.",
    )


class IngestConfig(ConfigModel):
    """How messages become readings, and how much the hub takes at once."""

    max_payload: ByteSize = Field(
        65536, description="Larger payloads are refused as dead letters ('payload_too_large')."
    )
    batch_max: int = Field(
        5000,
        ge=1,
        le=100000,
        description="Most messages committed in one store transaction (a backlog goes in batches of this many).",
    )
    batch_size: int = Field(
        50,
        ge=1,
        le=100000,
        title="Group commit size",
        description=(
            "Group commit: a batch this big is committed without waiting out batch_wait. At a "
            "steady rate the hub reads in windows, so it cuts the wait to what this many "
            "messages took to come in at the last batch's rate: at 2,000 msgs/s and 50, about "
            "25 ms; at a trickle batch_wait applies. Larger costs less CPU per message at high "
            "rates and adds latency there; at most batch_max."
        ),
    )
    batch_wait: Duration = Field(
        0.045,
        ge=0,
        le=1.0,
        title="Group commit wait",
        description=(
            "Group commit: a batch is committed when it holds batch_size messages or its oldest "
            "message has waited this long, less what the last commits took (so this is about "
            "the longest a message waits to be committed, at any rate); acks still follow the "
            "commit. At a steady load the hub then pays one transaction and a few thread "
            "wake-ups per batch instead of per message (docs/performance.md): at a trickle "
            "that is most of its CPU, and longer costs less. It adds up to this much to "
            "publish-to-commit latency, and a receive-time stamp (ESPHome states) may be taken "
            "up to this much after the broker sent the message. 0 commits as soon as a message "
            "is in."
        ),
    )
    max_topic_levels: int = Field(
        8, ge=2, le=32, description="Topics deeper than this are refused ('invalid_topic')."
    )
    future_tolerance: Duration = Field(
        86400.0, description="Timestamps further ahead than this are refused."
    )
    esphome: EsphomeMqttConfig = Field(
        default_factory=EsphomeMqttConfig, description="ESPHome MQTT topics."
    )
    hub_json: bool = Field(
        True, description="Ingest the hub's own JSON from bridges on <prefix>/readings/<device>."
    )
    mappings: list[TopicMapping] = Field(
        default_factory=list, description="Your own JSON topics mapped to readings."
    )
