"""The optional parts `hub run` starts beside the ingest core, as a plain registry.

A component is built from the hub's ports (hub.ports.Ports: config, publisher, committed
batches, store writer and reader, supervised tasks), never from the whole hub, and has
`async start()` / `async stop()`; `status()` adds a section to `hub status` (with an optional
"health" entry that /api/health aggregates). A
factory returns None when its part is switched off in config. Order matters: components
start in this order after ingest is up and stop in reverse before ingest stops.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hub.config import HubConfig
    from hub.ports import Ports


class Component(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


def _always(config: HubConfig) -> bool:
    return True


# name -> ("module:factory", wanted(config)); factory(ports) -> Component | None. The module is
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


def build_all(ports: Ports) -> list[Component]:
    components = []
    for target, wanted in REGISTRY.values():
        if not wanted(ports.config):
            continue
        module, attr = target.split(":")
        factory: Callable[[Ports], Component | None] = getattr(
            importlib.import_module(module), attr
        )
        component = factory(ports)
        if component is not None:
            components.append(component)
    return components
