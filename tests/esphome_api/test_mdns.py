"""mDNS discovery on the loopback interface: nodes found by `_esphomelib._tcp.local.`."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from hub.sources.esphome_api import MDNS_SERVICE, EsphomeApiBridge
from hub.sources.esphome_settings import EsphomeApiSettings
from hub.sources.esphome_sim import SimulatedDevice
from tests.esphome_api.test_bridge import Recorder, until


@pytest.fixture
async def advertiser() -> AsyncIterator[AsyncZeroconf]:
    zc = AsyncZeroconf(interfaces=["127.0.0.1"])
    yield zc
    await zc.async_unregister_all_services()
    await zc.async_close()


async def _advertise(zc: AsyncZeroconf, device: SimulatedDevice) -> None:
    info = ServiceInfo(
        MDNS_SERVICE,
        f"{device.name}.{MDNS_SERVICE}",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=device.port,
        server=f"{device.name}.local.",
        properties={"version": "2026.10.0", "platform": "ESP32"},
    )
    # Skip the name probe (no other responder here); wait out the announcements it sends.
    announcing = await zc.async_register_service(info, cooperating_responders=True)
    await announcing


async def test_nodes_found_by_mdns_are_bridged(
    advertiser: AsyncZeroconf, plain_device: SimulatedDevice
) -> None:
    skipped = SimulatedDevice("airq-mqtt-fed", port=0, rate=20)
    async with skipped:
        await _advertise(advertiser, plain_device)
        await _advertise(advertiser, skipped)
        settings = EsphomeApiSettings.model_validate({"mdns": True})
        recorder = Recorder()
        async with EsphomeApiBridge(
            settings, recorder, skip_devices={"airq-mqtt-fed"}, mdns_interfaces=["127.0.0.1"]
        ) as bridge:
            await until(lambda: len(recorder.decoded("airq-plain")[0]) >= 7)
            status = bridge.status()
            assert set(status) == {"airq-plain"}
            assert (
                status["airq-plain"].discovered and status["airq-plain"].port == plain_device.port
            )
    assert skipped.connections_total == 0
    assert recorder.availability("airq-plain") == ["online", "offline"]


async def test_listed_nodes_keep_their_config(
    advertiser: AsyncZeroconf, noise_device: SimulatedDevice, psk_b64: str
) -> None:
    await _advertise(advertiser, noise_device)
    settings = EsphomeApiSettings.model_validate(
        {
            "mdns": True,
            "devices": [
                {
                    "name": "airq-noise",
                    "host": "127.0.0.1",
                    "port": noise_device.port,
                    "encryption_key": psk_b64,
                }
            ],
        }
    )
    recorder = Recorder()
    async with EsphomeApiBridge(settings, recorder, mdns_interfaces=["127.0.0.1"]) as bridge:
        await until(lambda: len(recorder.decoded("airq-noise")[0]) >= 14)
        (status,) = bridge.status().values()
        assert not status.discovered and status.encrypted and status.connects == 1
    assert noise_device.handshake_failures == 0
