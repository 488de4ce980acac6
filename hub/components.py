"""The optional parts `hub run` starts beside the ingest core, as a plain registry.

A component is built from the running `Hub` (config, store, MQTT connection, ingest core)
and has `async start()` / `async stop()`; `status()` adds a section to `hub status`. A
factory returns None when its part is switched off in config. Order matters: components
start in this order after ingest is up and stop in reverse before ingest stops.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hub.config import HubConfig
    from hub.service import Hub


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


def _always(config: HubConfig) -> bool:
    return True


# name -> ("module:factory", wanted(config)); factory(hub) -> Component | None. The module is
# imported only when `wanted` says so, so a switched-off part costs no memory at all.
REGISTRY: dict[str, tuple[str, Callable[[HubConfig], bool]]] = {
    "esphome_api": (
        "hub.sources.esphome_component:build",
        lambda c: bool(c.esphome_api.devices or c.esphome_api.mdns),
    ),
    "influx": ("hub.store.influx:build", _always),  # also reports a paused outbox when disabled
    "alerts": ("hub.alerts.component:build", lambda c: c.alerts.enabled),
    "web": ("hub.web.component:build", lambda c: c.web.enabled),
}


def build_all(hub: Hub) -> list[Component]:
    components = []
    for target, wanted in REGISTRY.values():
        if not wanted(hub.config):
            continue
        module, attr = target.split(":")
        factory: Callable[[Hub], Component | None] = getattr(importlib.import_module(module), attr)
        component = factory(hub)
        if component is not None:
            components.append(component)
    return components
