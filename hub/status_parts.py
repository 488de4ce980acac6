"""Sections of a hub's status that `hub run` (hub.service) and a worker's web API
(hub.worker_web) build alike: the MQTT connection's figures and the ingest core's."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hub.bus.mqtt import MqttConnection
    from hub.ingest import IngestCore


class MessageRate:
    """Messages per second received, sampled at most every half second (status is read
    far more often than that by the web API)."""

    def __init__(self) -> None:
        self._sample = (time.monotonic(), 0)
        self.value = 0.0

    def update(self, received: int) -> float:
        now = time.monotonic()
        last_t, last_n = self._sample
        if now - last_t >= 0.5:
            self.value = (received - last_n) / (now - last_t)
            self._sample = (now, received)
        return self.value


def connection_fields(connection: MqttConnection | None) -> dict[str, Any]:
    """State, counters (not the history) and messages waiting of the MQTT connection."""
    return {
        "state": connection.state.value if connection else "stopped",
        **(
            {k: v for k, v in vars(connection.stats).items() if k != "history"}
            if connection
            else {}
        ),
        "pending": connection.pending() if connection else 0,
    }


def ingest_fields(
    ingest: IngestCore | None, connection: MqttConnection | None, rate: MessageRate
) -> dict[str, Any]:
    received = connection.stats.received if connection else 0
    return {
        **(ingest.stats.as_dict() if ingest else {}),
        "messages_per_s": round(rate.update(received), 1),
        "in_hand": ingest.in_hand if ingest else 0,
    }
