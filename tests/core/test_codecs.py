"""Pure codec tests: hub JSON, ESPHome topics and discovery, user mappings, the router."""

from __future__ import annotations

import math

import orjson
import pytest

from hub.bus import esphome, hub_json, reject
from hub.bus.mqtt import Message
from hub.bus.reject import Rejected
from hub.bus.router import Router
from hub.bus.topics import matches, valid_filter
from hub.config import HubConfig
from hub.model import Event, Reading

NOW = 1_763_800_000_000  # 2025-11-22


def msg(
    topic: str, payload: bytes | str, received: int = NOW, dup: bool = False, mid: int = 1
) -> Message:
    return Message(
        topic,
        payload.encode() if isinstance(payload, str) else payload,
        1,
        mid,
        dup,
        False,
        received,
    )


def rejected(router: Router, topic: str, payload: bytes | str) -> str:
    with pytest.raises(Rejected) as info:
        router.decode(msg(topic, payload), NOW)
    return info.value.reason


# -- hub JSON ----------------------------------------------------------------------------------


def test_hub_json_multi_value_with_units_tags_and_events() -> None:
    payload = b'{"ts": 1763800000.5, "values": {"pack_voltage": 11.87, "current": 23}, "units": {"current": "mA"}, "tags": {"vehicle": "x"}, "events": {"fault": "over-current"}, "source": "serial"}'
    readings, events = hub_json.decode("buggy", payload, NOW, NOW)
    assert readings == [
        Reading("buggy", "pack_voltage", 11.87, 1763800000500, "V", {"vehicle": "x"}, "serial"),
        Reading("buggy", "current", 23.0, 1763800000500, "mA", {"vehicle": "x"}, "serial"),
    ]
    assert events == [Event("buggy", "fault", "over-current", 1763800000500, "serial")]


def test_hub_json_single_value_defaults_to_receive_time() -> None:
    readings, _ = hub_json.decode(
        "room", b'{"metric": "co2", "value": 612, "unit": "ppm"}', NOW, NOW
    )
    assert readings == [Reading("room", "co2", 612.0, NOW, "ppm", {}, "mqtt")]


def test_hub_json_samples_and_iso_and_ms_timestamps() -> None:
    payload = orjson.dumps(
        {
            "samples": [
                {"ts": "2025-11-22T08:26:40Z", "values": {"rpm": 1}},
                {"ts_ms": NOW + 5, "values": {"rpm": 2}},
            ]
        }
    )
    readings, _ = hub_json.decode("b", payload, NOW, NOW)
    assert [(r.timestamp_ms, r.value) for r in readings] == [(1763800000000, 1.0), (NOW + 5, 2.0)]


def test_encode_round_trips() -> None:
    readings = [
        Reading("b", "pack_voltage", 11.5, NOW, "V", {}, "serial"),
        Reading("b", "current", 3.0, NOW, "A", {}, "serial"),
        Reading("b", "rpm", 1000.0, NOW + 100, "rpm", {"session": "s1"}, "serial"),
        Reading("b", "weird", 1.0, NOW + 100, "furlong", {"session": "s1"}, "serial"),
    ]
    events = [Event("b", "fault", "stall", NOW, "serial")]
    decoded, decoded_events = hub_json.decode("b", hub_json.encode(readings, events), 0, NOW)
    assert sorted(decoded, key=lambda r: (r.timestamp_ms, r.metric)) == sorted(
        readings, key=lambda r: (r.timestamp_ms, r.metric)
    )
    assert decoded_events == events


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe{}", reject.INVALID_UTF8),
        (b"{not json", reject.INVALID_JSON),
        (b"[1, 2]", reject.NOT_AN_OBJECT),
        (b'"text"', reject.NOT_AN_OBJECT),
        (b'{"values": {"co2": NaN}}', reject.NOT_A_NUMBER),
        (b'{"values": {"co2": Infinity}}', reject.NOT_A_NUMBER),
        (b'{"values": {"co2": "612"}}', reject.NOT_A_NUMBER),
        (b'{"values": {"co2": null}}', reject.NOT_A_NUMBER),
        (b'{"ts": 900000000, "values": {"co2": 1}}', reject.BAD_TIMESTAMP),
        (b'{"ts": 1863800000, "values": {"co2": 1}}', reject.BAD_TIMESTAMP),
        (b'{"ts": 1763800000000, "values": {"co2": 1}}', reject.BAD_TIMESTAMP),
        (b'{"ts": "yesterday", "values": {"co2": 1}}', reject.NOT_A_NUMBER),
        (b'{"values": {"CO2 ppm": 1}}', reject.BAD_NAME),
        (b'{"values": []}', reject.NOT_AN_OBJECT),
        (b"{}", reject.MISSING_FIELD),
        (b'{"device": "other", "values": {"co2": 1}}', reject.BAD_NAME),
        (b'{"samples": {"a": 1}}', reject.NOT_AN_OBJECT),
    ],
)
def test_hub_json_rejects(payload: bytes, reason: str) -> None:
    with pytest.raises(Rejected) as info:
        hub_json.decode("room", payload, NOW, NOW)
    assert info.value.reason == reason
    assert info.value.detail


# -- ESPHome -------------------------------------------------------------------------------------

DISCOVERY = orjson.dumps(
    {"dev_cla": "pm25", "unit_of_meas": "µg/m³", "stat_cla": "measurement", "name": "Living PM2.5", "stat_t": "livingroom/sensor/living_pm2_5/state",
     "avty_t": "livingroom/status", "uniq_id": "ESPsensorpm", "dev": {"ids": "a0b1c2d3e4f5", "name": "livingroom", "sw": "esphome v2026.10.0", "mdl": "esp32dev", "mf": "espressif"}}
)  # fmt: skip


def test_metric_rule() -> None:
    assert esphome.metric_for("living_pm2_5", "pm25", {}) == "pm2_5"
    assert esphome.metric_for("x", "carbon_dioxide", {}) == "co2"
    assert esphome.metric_for("sgp41_voc_index", None, {}) == "voc_index"
    assert esphome.metric_for("pm_10", None, {}) == "pm10"
    assert esphome.metric_for("pm_1", None, {}) == "pm1"
    assert esphome.metric_for("uptime", None, {}) is None
    assert esphome.metric_for("uptime", None, {"uptime": "uptime_s"}) == "uptime_s"


def test_discovery_teaches_units_and_device() -> None:
    router = Router(HubConfig())
    decoded = router.decode(
        msg("homeassistant/sensor/livingroom/living_pm2_5/config", DISCOVERY), NOW
    )
    entity = decoded.discoveries[0].entity
    assert (
        entity is not None
        and entity.metric == "pm2_5"
        and entity.unit == "µg/m³"
        and entity.device == "livingroom"
    )
    assert (
        decoded.devices[0].manufacturer == "espressif"
        and decoded.devices[0].sw_version == "esphome v2026.10.0"
    )
    decoded = router.decode(msg("livingroom/sensor/living_pm2_5/state", "12.4"), NOW)
    assert decoded.readings == [
        Reading("livingroom", "pm2_5", 12.4, NOW, "µg/m³", {"sensor": "living_pm2_5"}, "mqtt")
    ]
    assert not decoded.has_own_timestamp
    # an empty retained payload removes the entity
    router.decode(msg("homeassistant/sensor/livingroom/living_pm2_5/config", b""), NOW)
    assert "livingroom/sensor/living_pm2_5/state" not in router.entities


def test_unknown_sensor_with_discovery_is_kept_under_its_object_id() -> None:
    router = Router(HubConfig())
    config = orjson.dumps(
        {"stat_t": "n1/sensor/uptime/state", "unit_of_meas": "s", "name": "Uptime"}
    )
    router.decode(msg("homeassistant/sensor/n1/uptime/config", config), NOW)
    assert router.decode(msg("n1/sensor/uptime/state", "42"), NOW).readings[0].metric == "uptime"


def test_state_without_discovery_uses_known_names_or_is_refused() -> None:
    router = Router(HubConfig())
    readings = router.decode(msg("kitchen/sensor/scd41_co2/state", "734"), NOW).readings
    assert readings == [
        Reading("kitchen", "co2", 734.0, NOW, "ppm", {"sensor": "scd41_co2"}, "mqtt")
    ]
    assert rejected(router, "kitchen/sensor/mystery/state", "1") == reject.UNKNOWN_SENSOR


@pytest.mark.parametrize("state", ["nan", "NaN", "None", "unknown", "", "inf"])
def test_esphome_non_numbers_are_refused(state: str) -> None:
    assert rejected(Router(HubConfig()), "kitchen/sensor/co2/state", state) == reject.NOT_A_NUMBER


def test_binary_and_text_sensors_become_values_and_events() -> None:
    router = Router(HubConfig())
    decoded = router.decode(msg("hall/binary_sensor/motion/state", "ON"), NOW)
    assert decoded.readings == [
        Reading("hall", "motion", 1.0, NOW, None, {"sensor": "motion"}, "mqtt")
    ]
    assert decoded.events == [Event("hall", "motion", "ON", NOW, "mqtt")]
    assert (
        router.decode(msg("hall/binary_sensor/motion/state", "OFF"), NOW).readings[0].value == 0.0
    )
    decoded = router.decode(msg("hall/text_sensor/wifi_ssid/state", "lab-net"), NOW)
    assert decoded.readings == [] and decoded.events == [
        Event("hall", "wifi_ssid", "lab-net", NOW, "mqtt")
    ]
    assert rejected(router, "hall/binary_sensor/motion/state", "MAYBE") == reject.NOT_A_NUMBER


def test_availability_and_own_status_topics() -> None:
    router = Router(HubConfig())
    assert router.decode(msg("hall/status", "offline"), NOW).availability == [("hall", False, NOW)]
    assert router.decode(msg("hub/status", "online"), NOW).availability == []
    assert router.decode(msg("homeassistant/status", "online"), NOW).availability == []
    assert rejected(router, "hall/status", "sleeping") == reject.UNKNOWN_TOPIC


@pytest.mark.parametrize(
    "payload",
    [b"{broken", b"[]", orjson.dumps({"name": "no state topic"})],
)
def test_malformed_discovery_is_refused(payload: bytes) -> None:
    reason = rejected(Router(HubConfig()), "homeassistant/sensor/n1/x/config", payload)
    assert reason in (reject.INVALID_JSON, reject.NOT_AN_OBJECT, reject.BAD_DISCOVERY)


def test_discovery_of_other_components_and_our_own_is_ignored() -> None:
    router = Router(HubConfig())
    assert router.decode(msg("homeassistant/switch/n1/relay/config", b"{}"), NOW).discoveries == []
    own = orjson.dumps({"stat_t": "hub/x/sensor/y/state", "o": {"name": "hub"}})
    assert router.decode(msg("homeassistant/sensor/hub/y/config", own), NOW).discoveries == []


def test_abbreviated_tilde_topics_expand() -> None:
    config = orjson.dumps(
        {
            "~": "garage",
            "stat_t": "~/sensor/temperature/state",
            "unit_of_meas": "°C",
            "dev_cla": "temperature",
        }
    )
    found = esphome.decode_discovery("homeassistant/sensor/garage/temperature/config", config, {})
    assert (
        found is not None
        and found.entity is not None
        and found.entity.state_topic == "garage/sensor/temperature/state"
    )


# -- router rules --------------------------------------------------------------------------------


def test_topic_shape_rules() -> None:
    router = Router(HubConfig())
    assert rejected(router, "a/b/c/d/e/f/g/h/i/j", "1") == reject.BAD_TOPIC
    assert rejected(router, "wohnzimmer-ü/sensor/co2/state", "1") == reject.BAD_NAME
    assert rejected(router, "hub/readings/a/b", "{}") == reject.UNKNOWN_TOPIC
    assert rejected(router, "some/other/topic", "{}") == reject.UNKNOWN_TOPIC
    assert rejected(router, "hub/readings/x", b"{" + b" " * (1 << 20) + b"}") == reject.TOO_LARGE


def test_subscriptions() -> None:
    subs = Router(HubConfig()).subscriptions()
    assert "hub/readings/#" in subs and "+/sensor/+/state" in subs and "+/status" in subs
    assert "homeassistant/sensor/#" in subs
    assert all(valid_filter(s) is None for s in subs)


def test_user_mapping() -> None:
    config = HubConfig.model_validate(
        {"ingest": {"mappings": [{"topic": "zigbee2mqtt/+", "device": "{1}", "timestamp_path": "meta.time",
                                  "values": {"temperature": {"path": "temperature"}, "pack_voltage": {"path": "battery.mv", "unit": "V", "scale": 0.001}}}]}}
    )  # fmt: skip
    router = Router(config)
    decoded = router.decode(
        msg(
            "zigbee2mqtt/porch",
            b'{"temperature": 7.5, "battery": {"mv": 3010}, "meta": {"time": 1763800001}}',
        ),
        NOW,
    )
    assert decoded.readings == [
        Reading("porch", "temperature", 7.5, 1763800001000, "°C", {}, "mqtt"),
        Reading("porch", "pack_voltage", pytest.approx(3.01), 1763800001000, "V", {}, "mqtt"),
    ]
    assert "zigbee2mqtt/+" in router.subscriptions()
    assert rejected(router, "zigbee2mqtt/porch", b'{"linkquality": 5}') == reject.MISSING_FIELD
    assert rejected(router, "zigbee2mqtt/porch", b'{"temperature": "warm"}') == reject.NOT_A_NUMBER


def test_topic_matching() -> None:
    assert matches("a/+/c", "a/b/c") and not matches("a/+/c", "a/b/d")
    assert matches("a/#", "a/b/c/d") and matches("#", "x")
    assert not matches("+/status", "$SYS/status")
    assert valid_filter("a/#/b") is not None and valid_filter("a+/b") is not None


def test_finite_check() -> None:
    with pytest.raises(Rejected):
        hub_json.number(math.nan, "x")
    assert hub_json.number(True, "x") == 1.0


def test_bridge_lines_decode_through_the_serial_decoders() -> None:
    router = Router(HubConfig())
    assert "hub/bridge/+" in router.subscriptions()
    # KISS vector K1 of specs/esc-telemetry.md §8.1 as the RC bridge firmware sends it
    line = b'{"v":1,"t_us":1000000,"src":"esc0","proto":"kiss","raw":"2306 9004 D202 3701 0076"}\n'
    decoded = router.decode(msg("hub/bridge/rc-bridge", line), NOW)
    metrics = {r.metric: r.value for r in decoded.readings}
    assert decoded.readings and {r.device for r in decoded.readings} == {"rc-bridge"}
    assert metrics["esc_temperature"] == 35.0 and metrics["pack_voltage"] == pytest.approx(16.8)
    assert (
        rejected(
            router,
            "hub/bridge/rc-bridge",
            b'{"v":1,"t_us":1,"src":"esc0","proto":"kiss","raw":"0000"}\nnot json\n',
        )
        == reject.BAD_FRAME
    )


def test_bridge_availability_topics() -> None:
    router = Router(HubConfig())
    assert "hub/devices/+/availability" in router.subscriptions()
    assert router.decode(msg("hub/devices/node-7/availability", "offline"), NOW).availability == [
        ("node-7", False, NOW)
    ]
    assert rejected(router, "hub/devices/node-7/availability", "maybe") == reject.UNKNOWN_TOPIC


@pytest.mark.parametrize(
    ("payload", "received"),
    [
        ({"values": {"co2": 600}}, 1),
        ({"values": {"co2": 600}, "tags": {"room": "tstudio"}, "events": {"ts": "x"}}, 1),
        ({"ts_ms": NOW - 1000, "values": {"co2": 600}}, 0),
        ({"ts": (NOW - 1000) / 1000, "values": {"co2": 600}}, 0),
        ({"samples": [{"values": {"co2": 1}}, {"ts_ms": NOW - 5, "values": {"co2": 2}}]}, 1),
        ({"samples": [{"values": {"co2": 1}}, {"values": {"co2": 2}}]}, 2),
    ],
)
def test_hub_json_says_which_samples_carry_the_receive_time(
    payload: dict[str, object], received: int
) -> None:
    """Per sample: a sample without `ts` is stamped with the receive time and listed last, so
    only its readings are keyed by the message's receipt; a stamped one keeps its own time."""
    message = hub_json.decode_message("room", orjson.dumps(payload), NOW, NOW)
    assert message.received_readings == received
    assert message.stamped is (received == 0)
    assert all(r.timestamp_ms == NOW for r in message.readings[len(message.readings) - received :])
    assert all(r.timestamp_ms != NOW for r in message.readings[: len(message.readings) - received])
    assert (message.readings, message.events) == hub_json.decode(
        "room", orjson.dumps(payload), NOW, NOW
    )
