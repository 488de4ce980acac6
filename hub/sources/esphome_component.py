"""The native-API bridge as a `hub run` component: it publishes onto the hub's own MQTT
connection, so native-API readings enter through the broker like everything else."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from hub.sources.esphome_api import EsphomeApiBridge

if TYPE_CHECKING:
    from hub.ports import Ports


class EsphomeApiComponent:
    name = "esphome_api"

    def __init__(self, ports: Ports) -> None:
        config = ports.config
        publisher = ports.publisher

        def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
            publisher.publish(topic, payload, qos=qos, retain=retain)

        self.bridge = EsphomeApiBridge(
            config.esphome_api,
            publish,
            prefix=config.broker.topic_prefix,
            metric_map=config.ingest.esphome.metric_map,
        )

    async def start(self) -> None:
        await self.bridge.start()

    async def stop(self) -> None:
        await self.bridge.stop()

    def status(self) -> dict[str, Any]:
        devices = {name: dataclasses.asdict(st) for name, st in self.bridge.status().items()}
        return {"devices": devices, "counters": dict(self.bridge.counters)}


def build(ports: Ports) -> EsphomeApiComponent | None:
    settings = ports.config.esphome_api
    if not settings.devices and not settings.mdns:
        return None
    return EsphomeApiComponent(ports)
