"""The components only the leader worker runs (hub run --worker), as a plain registry.

Like hub.components for `hub run`: a factory takes the leader's Ports and returns a Component
(or None when switched off). The leader's `committed` port is fed by the PostgreSQL change
feed ("feed", always first: it takes the feed's cursor over and fences the previous leader
before the others load their state), so every component sees every worker's batches.
Components start in this order when the worker becomes leader and stop in reverse when it
stops being leader or stops; once all have started, those with a `begin()` method have it
called (the feed starts delivering only then, so no batch passes before its listeners
subscribed). Add one with one line in LEADER_REGISTRY.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.components import Component
    from hub.config import HubConfig
    from hub.ports import Ports

log = logging.getLogger(__name__)


def _always(config: HubConfig) -> bool:
    return True


# name -> ("module:factory", wanted(config)); factory(ports) -> Component | None.
LEADER_REGISTRY: dict[str, tuple[str, Callable[[HubConfig], bool]]] = {
    "feed": ("hub.store.postgres_feed:build", _always),
    "derive": ("hub.derive.leader:build", _always),
    "alerts": ("hub.alerts.component:build", lambda c: c.alerts.enabled),
}


class LeaderComponents:
    """Builds and starts the registry's components on taking the lead; stops them on losing it.

    Each is built right before it starts (not all first): "alerts" loads its firing alerts
    in its constructor, which must come after "feed" fenced the previous leader."""

    def __init__(self, make_ports: Callable[[LeaderComponents], Ports], stop_timeout: float = 30):
        self.make_ports = make_ports
        self.stop_timeout = stop_timeout
        self.components: list[Component] = []
        self.running = False
        self.starts = 0
        self.start_failures = 0
        self.last_error = ""

    def find(self, name: str) -> Component | None:
        return next((c for c in self.components if c.name == name), None)

    async def start(self) -> None:
        """Start every wanted component in order; on a failure stop those started and raise."""
        if self.running:
            return
        ports = self.make_ports(self)
        self.running = True
        try:
            for target, wanted in LEADER_REGISTRY.values():
                if not wanted(ports.config):
                    continue
                module, attr = target.split(":")
                factory: Callable[[Ports], Component | None] = getattr(
                    importlib.import_module(module), attr
                )
                component = await asyncio.to_thread(factory, ports)
                if component is None:
                    continue
                self.components.append(component)
                await component.start()
        except Exception as exc:
            self.start_failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("Starting the leader's components failed")
            await self.stop()
            raise
        for component in self.components:
            begin = getattr(component, "begin", None)
            if begin is not None:
                begin()
        self.starts += 1
        self.last_error = ""
        log.info("Leader components running: %s", ", ".join(c.name for c in self.components))

    async def stop(self) -> None:
        """Stop them in reverse order; a failing stop is logged and the rest still stop."""
        for component in reversed(self.components):
            try:
                await asyncio.wait_for(component.stop(), self.stop_timeout)
            except Exception:
                log.exception("Stopping leader component %s failed", component.name)
        if self.components:
            log.info("Leader components stopped: %s", ", ".join(c.name for c in self.components))
        self.components = []
        self.running = False

    def status(self) -> dict[str, Any]:
        return {
            "running": [c.name for c in self.components],
            "starts": self.starts,
            "start_failures": self.start_failures,
            "last_error": self.last_error,
            **{c.name: c.status() for c in self.components},
        }
