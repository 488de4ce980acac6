"""The hub's own MQTT connection against the test Mosquitto, for tests of batching and acks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hub.bus.mqtt import MqttConnection
from hub.config.broker import BrokerConfig
from tests.support.hubproc import wait_for
from tests.support.mosquitto import Mosquitto


async def connected(
    mosquitto: Mosquitto, client_id: str, topics: Sequence[str] = ("t/#",)
) -> MqttConnection:
    """A started connection (persistent session `client_id`) whose subscriptions are in place."""
    connection = MqttConnection(BrokerConfig(url=mosquitto.url), topics, client_id=client_id)
    connection.start(asyncio.get_running_loop())
    await asyncio.to_thread(wait_for, lambda: connection.connected, 10)
    await asyncio.sleep(0.3)  # the subscription is in place
    return connection


async def assert_nothing_redelivered(mosquitto: Mosquitto, client_id: str) -> None:
    """Every message of the session was acknowledged: resumed, it has nothing to deliver."""
    again = await connected(mosquitto, client_id)
    try:
        await asyncio.sleep(1.0)
        assert again.pending() == 0
    finally:
        again.stop()


class CountingWakeups:
    """Stands in for a paho client's wake-up socket (`_sockpairW`) and counts the wake-ups of
    its thread: `client._sockpairW = CountingWakeups(client._sockpairW)`."""

    def __init__(self, sock: Any) -> None:
        self.sock, self.sends = sock, 0

    def send(self, data: bytes) -> int:
        self.sends += 1
        return self.sock.send(data)

    def __getattr__(self, name: str) -> Any:  # close() and the rest: the socket's
        return getattr(self.sock, name)
