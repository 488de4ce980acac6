"""The one config file, `hub.yaml`, as a pydantic tree. Every option has a default and a
description; `hub config example` prints them all and `hub config check` points at the
line that is wrong. Loading (YAML, env overrides, line numbers) lives in `loader.py`.

Names are resolved lazily, so a section module elsewhere (serial, derive, ...) can import
`hub.config.base` without pulling in the whole tree, which imports it back.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.config.broker import BrokerConfig, ManagedBrokerConfig, TlsConfig
    from hub.config.ingest import EsphomeMqttConfig, IngestConfig, MappingValue, TopicMapping
    from hub.config.root import HubConfig
    from hub.config.runtime import LogConfig, SimulateConfig, StatusConfig
    from hub.config.store import RetentionConfig, StoreConfig

_WHERE = {
    "HubConfig": "root",
    "BrokerConfig": "broker",
    "ManagedBrokerConfig": "broker",
    "TlsConfig": "broker",
    "EsphomeMqttConfig": "ingest",
    "IngestConfig": "ingest",
    "MappingValue": "ingest",
    "TopicMapping": "ingest",
    "LogConfig": "runtime",
    "SimulateConfig": "runtime",
    "StatusConfig": "runtime",
    "RetentionConfig": "store",
    "StoreConfig": "store",
}

__all__ = [
    "BrokerConfig",
    "EsphomeMqttConfig",
    "HubConfig",
    "IngestConfig",
    "LogConfig",
    "ManagedBrokerConfig",
    "MappingValue",
    "RetentionConfig",
    "SimulateConfig",
    "StatusConfig",
    "StoreConfig",
    "TlsConfig",
    "TopicMapping",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'hub.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"hub.config.{module}"), name)
