"""The one config file, `hub.yaml`, as a pydantic tree. Every option has a default and a
description; `hub config example` prints them all and `hub config check` points at the
line that is wrong. Loading (YAML, env overrides, line numbers) lives in `loader.py`."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from hub.config.base import ConfigModel
from hub.config.broker import BrokerConfig, ManagedBrokerConfig, TlsConfig
from hub.config.ingest import EsphomeMqttConfig, IngestConfig, MappingValue, TopicMapping
from hub.config.runtime import LogConfig, SimulateConfig, StatusConfig
from hub.config.store import RetentionConfig, StoreConfig
from hub.derive.pipeline import DeriveConfig

__all__ = [
    "BrokerConfig", "DeriveConfig", "EsphomeMqttConfig", "HubConfig", "IngestConfig", "LogConfig",
    "ManagedBrokerConfig", "MappingValue", "RetentionConfig", "SimulateConfig", "StatusConfig",
    "StoreConfig", "TlsConfig", "TopicMapping",
]  # fmt: skip


class HubConfig(ConfigModel):
    """Root of hub.yaml."""

    data_dir: Path = Field(
        Path("hub-data"),
        description="Where the store, the managed broker's data and status files live (relative to the working directory).",
    )
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="MQTT broker.")
    ingest: IngestConfig = Field(default_factory=IngestConfig, description="Topics and decoding.")
    store: StoreConfig = Field(
        default_factory=StoreConfig, description="Embedded time-series store."
    )
    derive: DeriveConfig = Field(
        default_factory=DeriveConfig,
        description="Derived metrics: air-quality indices, LiPo and drive sessions.",
    )
    simulate: SimulateConfig = Field(
        default_factory=SimulateConfig, description="Built-in simulator."
    )
    log: LogConfig = Field(default_factory=LogConfig, description="Logging.")
    status: StatusConfig = Field(default_factory=StatusConfig, description="Self-reporting.")

    @property
    def store_path(self) -> Path:
        path = Path(self.store.path)
        return path if path.is_absolute() else self.data_dir / path
