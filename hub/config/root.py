"""The root of `hub.yaml`: every section, each defined next to the code it configures."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from hub.alerts.rules import AlertsConfig
from hub.config.base import ConfigModel
from hub.config.broker import BrokerConfig
from hub.config.ingest import IngestConfig
from hub.config.runtime import LogConfig, SimulateConfig, StatusConfig
from hub.config.store import StoreConfig
from hub.derive.pipeline import DeriveConfig
from hub.ha.settings import HomeAssistantConfig
from hub.sources.esphome_settings import EsphomeApiSettings
from hub.sources.serial.settings import SerialSourceConfig
from hub.store.influx_settings import InfluxSettings
from hub.web.settings import WebSettings

__all__ = ["HubConfig"]


class HubConfig(ConfigModel):
    """Root of hub.yaml."""

    data_dir: Path = Field(
        Path("hub-data"),
        description="Where the store, the managed broker's data and status files live (relative to the working directory).",
    )
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="MQTT broker.")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Topics and decoding.")
    esphome_api: EsphomeApiSettings = Field(
        default_factory=EsphomeApiSettings,
        description="ESPHome nodes read over the native API (aioesphomeapi).",
    )
    serial: SerialSourceConfig = Field(
        default_factory=SerialSourceConfig,
        description="RC bench serial logger: ports, protocols, ESC scale factors.",
    )
    store: StoreConfig = Field(
        default_factory=StoreConfig, description="Embedded time-series store."
    )
    influx: InfluxSettings = Field(
        default_factory=InfluxSettings,
        description="Forwarding to InfluxDB through the store's durable outbox.",
    )
    derive: DeriveConfig = Field(
        default_factory=DeriveConfig,
        description="Derived metrics: air-quality indices, LiPo and drive sessions.",
    )
    simulate: SimulateConfig = Field(
        default_factory=SimulateConfig, description="Built-in simulator."
    )
    web: WebSettings = Field(
        default_factory=WebSettings, description="Web dashboard, REST API and live feed."
    )
    alerts: AlertsConfig = Field(
        default_factory=AlertsConfig,
        description="Alert rules: built-in packs (air, rc), overrides and your own rules.",
    )
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig,
        description="Home Assistant: MQTT discovery entities and REST alert events.",
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")
    status: StatusConfig = Field(default_factory=StatusConfig, description="Self-reporting.")

    @property
    def store_path(self) -> Path:
        path = Path(self.store.path)
        return path if path.is_absolute() else self.data_dir / path
