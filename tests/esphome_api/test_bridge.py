"""The bridge against the simulator: hub JSON out, availability, errors, reconnect, MQTT."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import queue
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from hub.bus import hub_json
from hub.model import Event, Reading
from hub.sources.esphome_api import EsphomeApiBridge
from hub.sources.esphome_settings import EsphomeApiSettings, EsphomeDeviceSettings
from hub.sources.esphome_sim import AIRQ_ENTITIES, SimEntity, SimulatedDevice
from tests.support.mosquitto import Mosquitto, free_port


class Recorder:
    """An in-memory publish callable (async, as the paho wrapper is)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, int, bool]] = []

    async def __call__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.messages.append((topic, payload, qos, retain))

    def availability(self, device: str) -> list[str]:
        topic = f"hub/devices/{device}/availability"
        return [p.decode() for t, p, _, retain in self.messages if t == topic and retain]

    def decoded(self, device: str) -> tuple[list[Reading], list[Event]]:
        readings: list[Reading] = []
        events: list[Event] = []
        now_ms = int(time.time() * 1000)
        for topic, payload, qos, retain in self.messages:
            if topic == f"hub/readings/{device}":
                assert qos == 1 and not retain
                r, e = hub_json.decode(device, payload, now_ms, now_ms)
                readings += r
                events += e
        return readings, events


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def settings_for(
    *devices: SimulatedDevice, key: str | None = None, **extra: Any
) -> EsphomeApiSettings:
    return EsphomeApiSettings(
        devices=[
            EsphomeDeviceSettings(name=d.name, host=d.host, port=d.port, encryption_key=key)
            for d in devices
        ],
        **{"reconnect_max_backoff": "1s", **extra},
    )


def _metrics(readings: list[Reading]) -> dict[str, Reading]:
    return {r.tags["sensor"]: r for r in readings}


async def test_plaintext_node_to_hub_json(plain_device: SimulatedDevice) -> None:
    recorder = Recorder()
    async with EsphomeApiBridge(settings_for(plain_device), recorder) as bridge:
        await until(lambda: len(recorder.decoded("airq-plain")[0]) >= 30)
        status = bridge.status()["airq-plain"]
        assert status.connected and status.entities == 8 and status.esphome_version == "2026.10.0"
    readings, events = recorder.decoded("airq-plain")
    by_sensor = _metrics(readings)
    assert {s: (r.metric, r.unit) for s, r in by_sensor.items()} == {
        "pm2_5": ("pm2_5", "µg/m³"),
        "pm10": ("pm10", "µg/m³"),
        "co2": ("co2", "ppm"),
        "temperature": ("temperature", "°C"),
        "humidity": ("humidity", "%"),
        "voc_index": ("voc_index", None),
        "occupancy": ("occupancy", None),
    }
    assert all(r.source == "esphome_api" and r.device == "airq-plain" for r in readings)
    assert all(dict(r.tags) == {"sensor": r.tags["sensor"]} for r in readings)
    # Rounded to accuracy_decimals, as ESPHome's MQTT path publishes them.
    assert all(
        r.value == round(r.value, 1) for r in readings if r.metric in ("temperature", "humidity")
    )
    assert all(
        r.value == int(r.value) for r in readings if r.metric in ("pm2_5", "co2", "voc_index")
    )
    assert by_sensor["occupancy"].value in (0.0, 1.0)
    assert {e.name for e in events} == {"occupancy", "air_quality"}
    assert {e.text for e in events if e.name == "occupancy"} <= {"ON", "OFF"}
    # One burst, one message: the first message holds every sensor at one instant.
    first = next(p for t, p, _, _ in recorder.messages if t == "hub/readings/airq-plain")
    first_readings, _ = hub_json.decode("airq-plain", first, 0, int(time.time() * 1000))
    assert len({r.timestamp_ms for r in first_readings}) == 1 and len(first_readings) == 7
    assert recorder.availability("airq-plain") == ["online", "offline"]
    assert bridge.counters["missing_state"] == 0 and bridge.counters["unmapped_entity"] == 0


async def test_noise_node_with_the_right_key(noise_device: SimulatedDevice, psk_b64: str) -> None:
    recorder = Recorder()
    async with EsphomeApiBridge(settings_for(noise_device, key=psk_b64), recorder) as bridge:
        await until(lambda: len(recorder.decoded("airq-noise")[0]) >= 12)
        assert bridge.status()["airq-noise"].encrypted
    assert recorder.availability("airq-noise")[0] == "online"


async def test_wrong_key_names_the_device(
    noise_device: SimulatedDevice, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    wrong = base64.b64encode(os.urandom(32)).decode()
    with caplog.at_level(logging.DEBUG, logger="hub.sources.esphome_api"):
        async with EsphomeApiBridge(settings_for(noise_device, key=wrong), recorder) as bridge:
            await until(lambda: bridge.status()["airq-noise"].failures >= 1)
            error = bridge.status()["airq-noise"].last_error
    assert error is not None
    assert (
        "'airq-noise'" in error and "encryption key" in error and f":{noise_device.port}" in error
    )
    warnings = [
        r
        for r in caplog.records
        if r.name == "hub.sources.esphome_api" and r.levelno == logging.WARNING
    ]
    assert [r.getMessage() for r in warnings] == [error]
    assert noise_device.handshake_failures >= 1
    assert recorder.availability("airq-noise") == ["offline"]
    assert recorder.decoded("airq-noise") == ([], [])


async def test_refused_connection_warns_once_then_debug(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    settings = EsphomeApiSettings.model_validate(
        {
            "devices": [{"name": "airq-off", "host": "127.0.0.1", "port": port}],
            "reconnect_max_backoff": "1s",
        }
    )
    recorder = Recorder()
    with caplog.at_level(logging.DEBUG, logger="hub.sources.esphome_api"):
        async with EsphomeApiBridge(settings, recorder) as bridge:
            await until(lambda: bridge.status()["airq-off"].failures >= 2, timeout=8)
    mine = [
        r
        for r in caplog.records
        if r.name == "hub.sources.esphome_api" and "airq-off" in r.getMessage()
    ]
    failures = [r for r in mine if "refused the connection" in r.getMessage()]
    assert [r.levelno for r in failures][:2] == [logging.WARNING, logging.DEBUG]
    assert f"'airq-off' at 127.0.0.1:{port} refused the connection" in failures[0].getMessage()
    assert recorder.availability("airq-off") == ["offline"]


async def test_reconnects_after_the_node_restarts(plain_device: SimulatedDevice) -> None:
    recorder = Recorder()
    async with EsphomeApiBridge(settings_for(plain_device), recorder) as bridge:
        await until(lambda: recorder.availability("airq-plain") == ["online"])
        port = plain_device.port
        await plain_device.stop()
        await until(lambda: recorder.availability("airq-plain") == ["online", "offline"])
        before = len(recorder.decoded("airq-plain")[0])
        await asyncio.sleep(0.3)
        await plain_device.start()
        assert plain_device.port == port
        await until(lambda: recorder.availability("airq-plain") == ["online", "offline", "online"])
        await until(lambda: len(recorder.decoded("airq-plain")[0]) > before + 7)
        assert bridge.status()["airq-plain"].connects == 2
    assert recorder.availability("airq-plain")[-1] == "offline"


async def test_mqtt_fed_devices_are_skipped(plain_device: SimulatedDevice) -> None:
    other = SimulatedDevice("airq-other", port=0, rate=20)
    async with other:
        settings = EsphomeApiSettings(
            devices=[
                EsphomeDeviceSettings(
                    name=plain_device.name, host="127.0.0.1", port=plain_device.port, prefer="mqtt"
                ),
                EsphomeDeviceSettings(name=other.name, host="127.0.0.1", port=other.port),
            ]
        )
        assert settings.api_fed_devices() == {"airq-other"}
        recorder = Recorder()
        async with EsphomeApiBridge(settings, recorder, skip_devices={"airq-other"}) as bridge:
            await asyncio.sleep(0.5)
            assert bridge.status() == {}
    assert plain_device.connections_total == 0 and other.connections_total == 0
    assert recorder.messages == []


async def test_two_sensors_of_one_metric_stay_apart() -> None:
    entities = (
        *AIRQ_ENTITIES,
        SimEntity(
            "sensor", "BME280 Temperature", "temperature", "°C", "temperature", accuracy_decimals=2
        ),
        SimEntity(
            "sensor",
            "Gas-Resistance",
            "co2",
            "Ω",
            "",
            accuracy_decimals=0,
            object_id="gas-resistance",
        ),
    )
    recorder = Recorder()
    async with (
        SimulatedDevice("airq-two", port=0, rate=20, entities=entities) as device,
        EsphomeApiBridge(settings_for(device), recorder),
    ):
        await until(lambda: len(recorder.decoded("airq-two")[0]) >= 18)
    by_sensor = _metrics(recorder.decoded("airq-two")[0])
    assert (
        by_sensor["temperature"].metric == by_sensor["bme280_temperature"].metric == "temperature"
    )
    # A hyphen is no metric character: the metric is cleaned, the tag keeps the object id.
    assert by_sensor["gas-resistance"].metric == "gas_resistance"
    assert by_sensor["gas-resistance"].unit == "Ω"


async def test_a_failing_publish_is_counted_not_fatal(plain_device: SimulatedDevice) -> None:
    calls: list[str] = []

    def flaky(topic: str, payload: bytes, qos: int, retain: bool) -> None:  # a sync publish
        calls.append(topic)
        if len(calls) % 2:
            raise OSError("broker gone")

    async with EsphomeApiBridge(settings_for(plain_device), flaky) as bridge:
        await until(lambda: len(calls) >= 6)
    assert bridge.counters["publish_failed"] >= 3


class DropsWhileListing(SimulatedDevice):
    """A node that reboots the first time it is asked for its entities."""

    def _handle(self, session: Any, msg_type: int, data: bytes) -> bool:
        if msg_type == 11 and self.requests["ListEntitiesRequest"] == 0:  # ListEntitiesRequest
            self.requests["ListEntitiesRequest"] += 1
            return False
        return super()._handle(session, msg_type, data)


async def test_a_drop_during_setup_is_reported_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    async with (
        DropsWhileListing("airq-flaky", port=0, rate=20) as device,
        EsphomeApiBridge(settings_for(device), recorder) as bridge,
    ):
        await until(lambda: recorder.availability("airq-flaky") == ["offline", "online"])
        await until(lambda: len(recorder.decoded("airq-flaky")[0]) >= 7)
        assert bridge.counters["setup_failed"] == 1
        assert device.connections_total == 2
    assert any(
        "'airq-flaky' dropped while listing its entities" in r.getMessage() for r in caplog.records
    )


# --- end to end through a real Mosquitto ----------------------------------------------------


class PahoSubscriber:
    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{os.getpid()}-{id(self)}"
        )
        subscribed = queue.Queue[int]()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.put(mid)
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        subscribed.get(timeout=5)

    def drain(self) -> list[mqtt.MQTTMessage]:
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait())
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.mosquitto
async def test_end_to_end_through_mosquitto(
    mosquitto: Mosquitto, noise_device: SimulatedDevice, psk_b64: str
) -> None:
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="esphome-api-bridge-test")
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    subscriber = PahoSubscriber(mosquitto, "hub/#")
    received: list[mqtt.MQTTMessage] = []
    try:

        def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
            publisher.publish(topic, payload, qos=qos, retain=retain)

        async with EsphomeApiBridge(settings_for(noise_device, key=psk_b64), publish):

            def enough() -> bool:
                received.extend(subscriber.drain())
                return sum(m.topic == "hub/readings/airq-noise" for m in received) >= 5

            await until(enough)

        def offline_seen() -> bool:
            received.extend(subscriber.drain())
            return received[-1].payload == b"offline"

        await until(offline_seen)
    finally:
        subscriber.close()
        publisher.disconnect()
        publisher.loop_stop()

    now_ms = int(time.time() * 1000)
    readings = [
        r
        for m in received
        if m.topic == "hub/readings/airq-noise"
        for r in hub_json.decode("airq-noise", bytes(m.payload), now_ms, now_ms)[0]
    ]
    assert {r.metric for r in readings} >= {
        "pm2_5",
        "pm10",
        "co2",
        "temperature",
        "humidity",
        "voc_index",
    }
    assert all(r.source == "esphome_api" and r.tags["sensor"] for r in readings)
    availability = [m.payload for m in received if m.topic == "hub/devices/airq-noise/availability"]
    assert availability == [b"online", b"offline"]
    # Availability is retained: a subscriber that comes later learns the last state.
    late = PahoSubscriber(mosquitto, "hub/devices/+/availability")
    try:
        message = late.messages.get(timeout=5)
        assert (message.topic, message.payload, message.retain) == (
            "hub/devices/airq-noise/availability",
            b"offline",
            True,
        )
    finally:
        late.close()
