"""Pure parts: entity -> metric mapping, state conversion, error sentences, settings."""

from __future__ import annotations

import math

import pytest
from aioesphomeapi import (
    BadNameAPIError,
    BinarySensorInfo,
    BinarySensorState,
    EncryptionPlaintextAPIError,
    InvalidEncryptionKeyAPIError,
    RequiresEncryptionAPIError,
    SensorInfo,
    SensorState,
    SocketAPIError,
    SwitchInfo,
    TextSensorInfo,
    TextSensorState,
)
from pydantic import ValidationError

from hub.bus import hub_json
from hub.sources.esphome_api import (
    EntityMapping,
    SkippedState,
    convert_state,
    describe_error,
    discovered_device,
    map_entity,
)
from hub.sources.esphome_settings import EsphomeApiSettings, EsphomeDeviceSettings

KEY = "px7tsbK3C7bpXHr2OevEV2ZMg/FrNBw2+O2pNPbedtA="


@pytest.mark.parametrize(
    ("object_id", "device_class", "unit", "metric", "expected_unit"),
    [
        ("pm_2_5", "pm25", "µg/m³", "pm2_5", "µg/m³"),
        ("particulate_matter_10", "pm10", "µg/m³", "pm10", "µg/m³"),
        ("pm_1_0", "pm1", "µg/m³", "pm1", "µg/m³"),
        ("scd41_co2", "carbon_dioxide", "ppm", "co2", "ppm"),
        ("bme280_temperature", "temperature", "°C", "temperature", "°C"),
        ("bme280_humidity", "humidity", "%", "humidity", "%"),
        ("bme280_pressure", "atmospheric_pressure", "hPa", "pressure", "hPa"),
        ("baro", "pressure", "hPa", "pressure", "hPa"),
        ("sgp41_voc_index", "", "", "voc_index", None),
        ("sgp41_nox_index", "aqi", "", "nox_index", None),
        ("wifi_signal", "signal_strength", "dBm", "wifi_signal", "dBm"),
        ("uptime", "duration", "s", "uptime", "s"),
        ("co2", "", "", "co2", "ppm"),  # no unit sent: the catalog's
    ],
)
def test_sensor_metric_rule(
    object_id: str, device_class: str, unit: str, metric: str, expected_unit: str | None
) -> None:
    info = SensorInfo(object_id=object_id, key=7, name=object_id, device_class=device_class,
                      unit_of_measurement=unit, accuracy_decimals=1)  # fmt: skip
    assert map_entity(info) == EntityMapping(7, "sensor", object_id, metric, expected_unit, 1)


def test_metric_map_override_and_missing_object_id() -> None:
    info = SensorInfo(object_id="", key=1, name="Living Room CO₂", unit_of_measurement="ppm")
    mapping = map_entity(info, {"living_room_co___": "co2"})
    assert mapping is not None
    assert (mapping.object_id, mapping.metric) == ("living_room_co___", "co2")
    odd = map_entity(SensorInfo(object_id="2nd-floor", key=2, name="x"))
    assert odd is not None and hub_json.METRIC_RE.match(odd.metric) and odd.object_id == "2nd-floor"


def test_other_entity_kinds() -> None:
    binary = map_entity(BinarySensorInfo(object_id="window_open", key=3, device_class="window"))
    text = map_entity(TextSensorInfo(object_id="pms_status", key=4))
    assert binary == EntityMapping(3, "binary_sensor", "window_open", "window_open", None, 0)
    assert text == EntityMapping(4, "text_sensor", "pms_status", "pms_status", None, None)
    assert map_entity(SwitchInfo(object_id="fan", key=5)) is None


def test_convert_states() -> None:
    sensor = EntityMapping(1, "sensor", "temperature", "temperature", "°C", 1)
    readings, events = convert_state(
        "node", sensor, SensorState(key=1, state=21.549999237060547), 1_700_000_000_000
    )
    assert events == []
    (reading,) = readings
    assert (reading.metric, reading.value, reading.unit, dict(reading.tags), reading.source) == (
        "temperature", 21.5, "°C", {"sensor": "temperature"}, "esphome_api"
    )  # fmt: skip
    with pytest.raises(SkippedState) as skipped:
        convert_state("node", sensor, SensorState(key=1, state=math.nan, missing_state=True), 0)
    assert skipped.value.reason == "missing_state"
    with pytest.raises(SkippedState):
        convert_state("node", sensor, SensorState(key=1, state=math.inf), 0)
    binary = EntityMapping(2, "binary_sensor", "occupancy", "occupancy", None, 0)
    readings, events = convert_state("node", binary, BinarySensorState(key=2, state=True), 5)
    assert [(r.metric, r.value) for r in readings] == [("occupancy", 1.0)]
    assert [(e.name, e.text) for e in events] == [("occupancy", "ON")]
    text = EntityMapping(3, "text_sensor", "status", "status", None, None)
    readings, events = convert_state("node", text, TextSensorState(key=3, state="x" * 5000), 5)
    assert readings == [] and len(events[0].text) == 1024


def test_converted_readings_survive_hub_json() -> None:
    mapping = EntityMapping(1, "sensor", "pm_2_5", "pm2_5", "µg/m³", 0)
    readings, _ = convert_state(
        "airq-1", mapping, SensorState(key=1, state=12.4), 1_732_262_400_250
    )
    back, _ = hub_json.decode("airq-1", hub_json.encode(readings), 0, 1_732_262_400_250)
    assert back == readings


@pytest.mark.parametrize(
    ("err", "words"),
    [
        (
            InvalidEncryptionKeyAPIError("Invalid encryption key", "airq-1", None),
            "rejected the encryption key",
        ),
        (RequiresEncryptionAPIError("Connection requires encryption"), "requires encryption"),
        (EncryptionPlaintextAPIError("plaintext"), "does not use encryption"),
        (BadNameAPIError("other name", "kitchen-aq"), "'kitchen-aq'"),
        (
            SocketAPIError(
                "Error connecting to [('127.0.0.1', 1)]: [Errno 111] Connect call failed"
            ),
            "cannot talk",
        ),
        (ConnectionRefusedError(111, "Connection refused"), "refused the connection"),
    ],
)
def test_error_sentences_name_the_node(err: Exception, words: str) -> None:
    message = describe_error("airq-1", "10.0.0.5", 6053, err)
    assert "'airq-1' at 10.0.0.5:6053" in message and words in message


def test_refused_found_through_the_cause_chain() -> None:
    err = SocketAPIError("Error connecting")
    err.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    assert "refused the connection" in describe_error("a", "h", 1, err)


def test_settings_defaults_and_checks() -> None:
    settings = EsphomeApiSettings()
    assert (settings.devices, settings.mdns, settings.reconnect_max_backoff) == ([], False, 60.0)
    device = EsphomeDeviceSettings.model_validate(
        {"name": "airq-1", "host": "10.0.0.5", "encryption_key": KEY}
    )
    assert device.port == 6053 and device.prefer == "api"
    assert KEY not in repr(device)
    refused = {
        "not base64": {"name": "a", "host": "h", "encryption_key": "not a key!"},
        "16 bytes": {"name": "a", "host": "h", "encryption_key": "AAAAAAAAAAAAAAAAAAAAAA=="},
        "prefer": {"name": "a", "host": "h", "prefer": "both"},
        "hots": {"name": "a", "host": "h", "hots": "typo"},
        "name": {"name": "bad name", "host": "h"},
        "port": {"name": "a", "host": "h", "port": 70000},
    }
    for words, raw in refused.items():
        with pytest.raises(ValidationError, match=words):
            EsphomeDeviceSettings.model_validate(raw)
    with pytest.raises(ValidationError, match="listed twice"):
        EsphomeApiSettings.model_validate(
            {"devices": [{"name": "a", "host": "h"}, {"name": "a", "host": "i"}]}
        )
    with pytest.raises(ValidationError, match="reconnect_max_backoff"):
        EsphomeApiSettings.model_validate({"reconnect_max_backoff": "5m"})
    assert (
        EsphomeDeviceSettings.model_validate(
            {"name": "a", "host": "h", "encryption_key": ""}
        ).encryption_key
        is None
    )
    assert (
        EsphomeApiSettings.model_validate({"reconnect_max_backoff": "10s"}).reconnect_max_backoff
        == 10.0
    )


def test_discovered_device() -> None:
    device = discovered_device("kitchen-aq", ["fe80::1%2", "192.168.1.7"], 6053)
    assert device is not None and (device.name, device.host, device.port) == (
        "kitchen-aq",
        "192.168.1.7",
        6053,
    )
    assert device.encryption_key is None
    assert discovered_device("kitchen-aq", [], 6053) is None
    assert discovered_device("bad name!", ["192.168.1.7"], 6053) is None
