"""aioesphomeapi's real APIClient against the simulator: plaintext, Noise, wrong keys."""

from __future__ import annotations

import asyncio
import base64
import math
import os
import random

import pytest
from aioesphomeapi import (
    APIClient,
    BinarySensorInfo,
    EncryptionPlaintextAPIError,
    InvalidEncryptionKeyAPIError,
    RequiresEncryptionAPIError,
    SensorInfo,
    SensorState,
    TextSensorInfo,
)
from aioesphomeapi.core import MESSAGE_TYPE_TO_PROTO

from hub.sources.esphome_sim import (
    AIRQ_ENTITIES,
    AirQualityModel,
    SimulatedDevice,
    SimulatorFleet,
    encode_varuint,
    firmware_object_id,
    fnv1_32,
    plaintext_frame,
)


async def _session(port: int, key: str | None = None) -> APIClient:
    client = APIClient("127.0.0.1", port, None, noise_psk=key, client_info="hub-tests")
    await client.connect(login=True)
    return client


async def _states(client: APIClient, count: int) -> list[object]:
    got: list[object] = []
    enough = asyncio.Event()

    def on_state(state: object) -> None:
        got.append(state)
        if len(got) >= count:
            enough.set()

    client.subscribe_states(on_state)
    await asyncio.wait_for(enough.wait(), 10)
    return got


async def _check_node(client: APIClient, name: str) -> None:
    info = await client.device_info()
    assert info.name == name
    assert info.manufacturer == "Espressif"
    entities, services = await client.list_entities_services()
    assert services == []
    sensors = {e.object_id: e for e in entities if isinstance(e, SensorInfo)}
    assert set(sensors) == {"pm2_5", "pm10", "co2", "temperature", "humidity", "voc_index"}
    assert sensors["pm2_5"].unit_of_measurement == "µg/m³"
    assert sensors["pm2_5"].device_class == "pm25"
    assert sensors["co2"].device_class == "carbon_dioxide"
    assert sensors["temperature"].accuracy_decimals == 1
    assert sensors["temperature"].state_class.name == "MEASUREMENT"
    assert sensors["co2"].key == fnv1_32("co2")
    assert [e.object_id for e in entities if isinstance(e, BinarySensorInfo)] == ["occupancy"]
    assert [e.object_id for e in entities if isinstance(e, TextSensorInfo)] == ["air_quality"]
    # The first burst carries every entity; then sensors keep coming at the node's rate.
    states = await _states(client, len(entities) + 12)
    keys = {e.key for e in entities}
    assert {s.key for s in states[: len(entities)]} == keys
    by_key = {e.key: e.object_id for e in entities}
    for state in states:
        if isinstance(state, SensorState):
            value = state.state
            assert math.isfinite(value)
            low, high = {"pm2_5": (0, 500), "pm10": (0, 700), "co2": (400, 5000), "temperature": (5, 40),
                         "humidity": (0, 100), "voc_index": (1, 500)}[by_key[state.key]]  # fmt: skip
            assert low <= value <= high, (by_key[state.key], value)
    assert len(states) > len(entities)


async def test_plaintext_client_reads_info_entities_and_states(
    plain_device: SimulatedDevice,
) -> None:
    client = await _session(plain_device.port)
    try:
        assert client.api_version is not None and client.api_version.major == 1
        await _check_node(client, "airq-plain")
    finally:
        await client.disconnect()


async def test_noise_client_reads_info_entities_and_states(
    noise_device: SimulatedDevice, psk_b64: str
) -> None:
    client = await _session(noise_device.port, psk_b64)
    try:
        await _check_node(client, "airq-noise")
    finally:
        await client.disconnect()
    assert noise_device.handshake_failures == 0


async def test_pings_are_answered(plain_device: SimulatedDevice) -> None:
    # keepalive 0.1 s: a client whose pings go unanswered drops after 0.45 s.
    client = APIClient("127.0.0.1", plain_device.port, None, keepalive=0.1)
    await client.connect(login=True)
    try:
        await asyncio.sleep(1.0)
        assert plain_device.requests["PingRequest"] >= 3
        assert client.connected_address is not None
        assert (await client.device_info()).name == "airq-plain"
    finally:
        await client.disconnect()
    assert plain_device.requests["DisconnectRequest"] == 1


async def test_wrong_key_is_refused_like_firmware(noise_device: SimulatedDevice) -> None:
    wrong = base64.b64encode(os.urandom(32)).decode()
    client = APIClient("127.0.0.1", noise_device.port, None, noise_psk=wrong)
    with pytest.raises(InvalidEncryptionKeyAPIError) as caught:
        await client.connect(login=True)
    # The hello went out before the handshake failed, so the client knows whom it talked to.
    assert caught.value.received_name == "airq-noise"
    assert noise_device.handshake_failures == 1
    await client.disconnect()


async def test_plaintext_client_to_encrypted_node(noise_device: SimulatedDevice) -> None:
    client = APIClient("127.0.0.1", noise_device.port, None)
    with pytest.raises(RequiresEncryptionAPIError):
        await client.connect(login=True)
    await client.disconnect()


async def test_key_for_a_plaintext_node(plain_device: SimulatedDevice, psk_b64: str) -> None:
    client = APIClient("127.0.0.1", plain_device.port, None, noise_psk=psk_b64)
    with pytest.raises(EncryptionPlaintextAPIError):
        await client.connect(login=True)
    await client.disconnect()


async def test_frames_split_byte_by_byte_and_merged(plain_device: SimulatedDevice) -> None:
    """A raw peer: the simulator reads whole frames from any fragmentation."""
    hello = next(c for c in MESSAGE_TYPE_TO_PROTO.values() if c.__name__ == "HelloRequest")(
        client_info="raw"
    )
    ping = next(c for c in MESSAGE_TYPE_TO_PROTO.values() if c.__name__ == "PingRequest")()
    type_of = {c: n for n, c in MESSAGE_TYPE_TO_PROTO.items()}
    data = plaintext_frame(type_of[type(hello)], hello.SerializeToString())
    data += plaintext_frame(type_of[type(ping)], b"") * 3
    reader, writer = await asyncio.open_connection("127.0.0.1", plain_device.port)
    try:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
        got = await asyncio.wait_for(reader.read(4096), 5)
        while got.count(b"\x00\x00\x08") < 3:  # three PingResponse frames (type 8, empty)
            got += await asyncio.wait_for(reader.read(4096), 5)
        assert got[0] == 0x00 and got[2] == 2  # HelloResponse first
    finally:
        writer.close()
        await writer.wait_closed()


async def test_garbage_closes_the_connection_not_the_node(plain_device: SimulatedDevice) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", plain_device.port)
    writer.write(b"\x00\xff\xff\xff\xff\xff\x01")  # a varuint longer than 4 bytes
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()
    client = await _session(plain_device.port)  # still serving
    await client.disconnect()


async def test_fleet_on_consecutive_ports() -> None:
    async with SimulatorFleet(3, port_base=0, rate=5) as fleet:
        names = []
        for device in fleet.devices:
            client = await _session(device.port)
            names.append((await client.device_info()).name)
            await client.disconnect()
    assert names == ["airq-sim-1", "airq-sim-2", "airq-sim-3"]


def test_varuint_and_fnv1() -> None:
    assert encode_varuint(0) == b"\x00"
    assert encode_varuint(127) == b"\x7f"
    assert encode_varuint(300) == b"\xac\x02"
    assert fnv1_32("") == 2166136261
    assert fnv1_32("a") == 0x050C5D7E  # FNV-1 32-bit test vector


def test_air_model_stays_in_realistic_ranges() -> None:
    model = AirQualityModel(random.Random(7))
    seen = []
    for _ in range(6 * 3600):  # six hours at 1 s
        model.step(1.0)
        seen.append(model.values())
    pm = [v["pm2_5"] for v in seen]
    co2 = [v["co2"] for v in seen]
    assert min(pm) >= 0 and max(pm) < 200
    assert min(co2) >= 400 and max(co2) < 2500
    assert all(15 < v["temperature"] < 30 and 20 < v["humidity"] < 80 for v in seen)
    assert all(1 <= v["voc_index"] <= 500 for v in seen)
    assert all(v["pm10"] >= v["pm2_5"] for v in seen)
    assert len({v["occupied"] for v in seen}) == 2  # occupancy changes within hours


def test_entities_resolve_to_esphome_object_ids() -> None:
    ids = [e.resolved().object_id for e in AIRQ_ENTITIES]
    assert ids == [
        "pm2_5",
        "pm10",
        "co2",
        "temperature",
        "humidity",
        "voc_index",
        "occupancy",
        "air_quality",
    ]
    # The vectors of air-quality.md §6 (the C++ rule: UTF-8 bytes are replaced one by one).
    assert firmware_object_id("PM2.5 Concentration") == "pm2_5_concentration"
    assert firmware_object_id("CO₂") == "co___"
    assert firmware_object_id("Wi-Fi Signal") == "wi-fi_signal"
