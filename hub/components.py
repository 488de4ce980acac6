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
    from hub.service import Hub


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


# name -> "module:factory", factory(hub) -> Component | None
REGISTRY: dict[str, str] = {
    "esphome_api": "hub.sources.esphome_component:build",
}


def build_all(hub: Hub) -> list[Component]:
    components = []
    for target in REGISTRY.values():
        module, attr = target.split(":")
        factory: Callable[[Hub], Component | None] = getattr(importlib.import_module(module), attr)
        component = factory(hub)
        if component is not None:
            components.append(component)
    return components
