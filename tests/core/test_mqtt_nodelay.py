"""The hub's own MQTT connections switch Nagle's algorithm off (real Mosquitto).

With Nagle on, the second of two back-to-back packets (an alert's attributes, then its
state) waited for a delayed TCP ack: 40 ms added to alert latency now and then."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from hub.bus.mqtt import MqttConnection
from hub.config.broker import BrokerConfig
from hub.ha.discovery import DiscoveryPublisher
from hub.ha.settings import DiscoverySettings
from tests.support.hubproc import wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.mosquitto


def _nodelay(sock: object) -> int:
    assert isinstance(sock, socket.socket)
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_discovery_publisher_socket_has_nodelay(mosquitto: Mosquitto, tmp_path: Path) -> None:
    publisher = DiscoveryPublisher(
        DiscoverySettings(), BrokerConfig(url=mosquitto.url), "hub_t", tmp_path / "m.json", "t-ha"
    )
    publisher.start()
    try:
        assert publisher.wait_connected(10)
        assert _nodelay(publisher._client.socket()) == 1
    finally:
        publisher.stop()


def test_ingest_connection_socket_has_nodelay(mosquitto: Mosquitto) -> None:
    async def main() -> None:
        connection = MqttConnection(BrokerConfig(url=mosquitto.url), ["t/#"], client_id="t-ingest")
        connection.start(asyncio.get_running_loop())
        try:
            await asyncio.to_thread(wait_for, lambda: connection.connected, 10)
            assert _nodelay(connection._client.socket()) == 1
        finally:
            connection.stop()

    asyncio.run(main())
