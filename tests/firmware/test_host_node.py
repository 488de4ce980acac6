"""The real ESPHome native API, served by firmware/host/hub-test-node.yaml built for `host`.

aioesphomeapi (the client Home Assistant and the hub's bridge use) talks to the compiled
firmware: device info, the entity list with device classes and units, a stream of changing
states, and a fresh connection after the device crashed and came back.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import pytest
from aioesphomeapi import (
    APIClient,
    BinarySensorInfo,
    EntityState,
    SensorInfo,
    SensorStateClass,
    TextSensorInfo,
)

from tests.esphome_host import ESPHOME_VERSION, HostNode

pytestmark = pytest.mark.esphome

# A deadline for things that normally take 1-4 s, not a timing assertion.
DEADLINE_S = 20.0


async def connected(node: HostNode, lost: asyncio.Event | None = None) -> APIClient:
    """A logged-in client; `lost` is set when the connection ends."""

    async def on_stop(expected_disconnect: bool) -> None:
        if lost is not None:
            lost.set()

    client = APIClient(node.host, node.port, None, client_info="hub-tests")
    await asyncio.wait_for(client.connect(on_stop=on_stop, login=True), DEADLINE_S)
    return client


@pytest.fixture
async def client(hub_test_node: HostNode) -> AsyncIterator[APIClient]:
    api = await connected(hub_test_node)
    yield api
    await api.disconnect()


async def collect_states(
    api: APIClient, done: Callable[[dict[int, list[object]]], bool]
) -> dict[int, list[object]]:
    """States per entity key (those with a value), until `done(states)` holds."""
    states: dict[int, list[object]] = defaultdict(list)
    changed = asyncio.Event()

    def on_state(state: EntityState) -> None:
        if getattr(state, "missing_state", False):
            return
        states[state.key].append(getattr(state, "state", None))
        changed.set()

    api.subscribe_states(on_state)
    async with asyncio.timeout(DEADLINE_S):
        while not done(states):
            changed.clear()
            await changed.wait()
    return states


async def test_device_info(client: APIClient) -> None:
    info = await client.device_info()
    assert info.name == "hub-test-node"
    assert info.friendly_name == "Hub test node"
    assert info.esphome_version == ESPHOME_VERSION
    assert info.model == "host"
    assert not info.uses_password
    assert not info.api_encryption_supported


async def test_entities_carry_classes_and_units(client: APIClient) -> None:
    entities, services = await client.list_entities_services()
    by_id = {entity.object_id: entity for entity in entities}
    assert set(by_id) == {"temperature", "humidity", "co2", "pm2_5", "window_open", "status"}
    expected = {
        "temperature": ("temperature", "°C", 1),
        "humidity": ("humidity", "%", 1),
        "co2": ("carbon_dioxide", "ppm", 0),
        "pm2_5": ("pm25", "µg/m³", 0),
    }
    for object_id, (device_class, unit, decimals) in expected.items():
        sensor = by_id[object_id]
        assert isinstance(sensor, SensorInfo)
        assert (sensor.device_class, sensor.unit_of_measurement) == (device_class, unit)
        assert sensor.accuracy_decimals == decimals
        assert sensor.state_class == SensorStateClass.MEASUREMENT
    window = by_id["window_open"]
    assert isinstance(window, BinarySensorInfo)
    assert window.device_class == "window"
    assert isinstance(by_id["status"], TextSensorInfo)
    assert services == []


async def test_states_arrive_and_change(client: APIClient) -> None:
    entities, _ = await client.list_entities_services()
    keys = {entity.object_id: entity.key for entity in entities}

    def every_entity_changed(states: dict[int, list[object]]) -> bool:
        return all(len(set(states.get(key, []))) >= 2 for key in keys.values())

    states = await collect_states(client, every_entity_changed)
    temperatures = states[keys["temperature"]]
    assert all(isinstance(t, float) and 20.9 < t < 23.0 for t in temperatures)
    assert set(states[keys["window_open"]]) == {True, False}
    assert all(str(s).startswith("tick ") for s in states[keys["status"]])
    co2 = states[keys["co2"]]
    assert all(600 <= c <= 890 for c in co2)  # type: ignore[operator]


async def test_new_connection_after_crash_and_restart(hub_test_node: HostNode) -> None:
    lost = asyncio.Event()
    first = await connected(hub_test_node, lost)
    assert await collect_states(first, lambda s: len(s) >= 1)

    hub_test_node.kill()
    # The client notices the crash (connection reset) without being told.
    await asyncio.wait_for(lost.wait(), DEADLINE_S)
    await first.disconnect(force=True)

    hub_test_node.start()
    second = await connected(hub_test_node)
    try:
        info = await second.device_info()
        assert info.name == "hub-test-node"
        after = await collect_states(second, lambda s: len(s) >= 6)
        assert len(after) == 6
    finally:
        await second.disconnect()
