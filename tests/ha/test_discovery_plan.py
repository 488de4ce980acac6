"""Pure parts of the Home Assistant discovery (issue #20): which node a device is in Home
Assistant, what the hub announces for it, with which names, ids and device block."""

from __future__ import annotations

from typing import Any

import orjson

from hub.alerts.packs import all_builtin_rules
from hub.alerts.rules import Rule, RuleConfig
from hub.alerts.store import Alert
from hub.ha.discovery import DeviceMeta, Topics, alert_attributes, alert_config, sensor_config
from hub.ha.names import sensor_name
from hub.ha.nodes import NodeDirectory, format_mac
from hub.sources.simulate import AirNode

MAC = "0299aabbcc00"


def _esphome_config(node: str, object_id: str, **extra: object) -> tuple[str, bytes]:
    config = {
        "name": object_id.replace("_", " ").title(),
        "stat_t": f"{node}/sensor/{object_id}/state",
        "uniq_id": f"{MAC}-{object_id}",
        "dev": {"ids": MAC, "name": node, "mf": "Espressif", "mdl": "esp32dev",
                "cns": [["mac", MAC]]},
        **extra,
    }  # fmt: skip
    return f"homeassistant/sensor/{node}/{object_id}/config", orjson.dumps(config)


def test_directory_learns_identity_and_announced_metrics_from_esphome_discovery() -> None:
    nodes = NodeDirectory()
    assert nodes.learn_discovery(*_esphome_config("airq-1", "co2", dev_cla="carbon_dioxide"))
    assert nodes.learn_discovery(*_esphome_config("airq-1", "pm_2_5", dev_cla="pm25"))
    node = nodes.get("airq-1")
    assert node is not None
    assert node.identifiers == (MAC,)
    assert node.connections == (("mac", "02:99:aa:bb:cc:00"),)
    assert node.announced_metrics == {"co2", "pm2_5"}
    assert node.entity_ids == {"sensor.airq_1_co2", "sensor.airq_1_pm_2_5"}
    # The same config again changes nothing; a removal forgets the entity, then the node.
    generation = nodes.generation
    assert not nodes.learn_discovery(*_esphome_config("airq-1", "co2", dev_cla="carbon_dioxide"))
    assert nodes.generation == generation
    nodes.learn_discovery("homeassistant/sensor/airq-1/co2/config", b"")
    nodes.learn_discovery("homeassistant/sensor/airq-1/pm_2_5/config", b"")
    assert nodes.get("airq-1") is None


def test_directory_ignores_the_hubs_own_configs() -> None:
    nodes = NodeDirectory()
    topic, payload = _esphome_config("airq-1", "co2", o={"name": "telemetry-hub"})
    assert not nodes.learn_discovery(topic, payload)
    assert nodes.get("airq-1") is None


def test_directory_learns_native_api_nodes_by_mac() -> None:
    nodes = NodeDirectory()
    info = {"name": "airq-9", "mac_address": "02:99:AA:BB:CC:09", "model": "esp32dev"}
    assert nodes.learn_api_info("airq-9", orjson.dumps(info))
    node = nodes.get("airq-9")
    assert node is not None and node.connections == (("mac", "02:99:aa:bb:cc:09"),)
    assert node.announces("co2")  # the ESPHome integration shows every raw sensor itself
    assert format_mac("0299aabbcc09") == "02:99:aa:bb:cc:09"
    assert format_mac("not-a-mac") is None


def test_simulated_node_announces_itself_as_esphome_does() -> None:
    """The simulator is what the demo and the tests see: its device block must carry the MAC
    as identifier and connection, as ESPHome's mqtt_component.cpp writes it."""
    import random

    nodes = NodeDirectory()
    for topic, payload, retain in AirNode("airq-1", random.Random(1)).discovery():
        if topic.startswith("homeassistant/"):
            assert retain
            nodes.learn_discovery(topic, payload)
    node = nodes.get("airq-1")
    assert node is not None and node.connections and node.identifiers
    assert {"co2", "pm2_5", "temperature", "humidity", "voc_index"} <= node.announced_metrics


def _meta_with_node() -> DeviceMeta:
    nodes = NodeDirectory()
    nodes.learn_discovery(*_esphome_config("airq-1", "co2", dev_cla="carbon_dioxide"))
    nodes.learn_discovery(*_esphome_config("airq-1", "dew_point", name="Dew Point"))
    return DeviceMeta("airq-1", node=nodes.get("airq-1"))


def test_derived_sensor_joins_the_nodes_device_with_a_short_name_and_no_colliding_id() -> None:
    meta = _meta_with_node()
    topic, config = sensor_config(Topics(), meta, "aqi_us_nowcast", "hub_x", 600)
    assert topic == "homeassistant/sensor/hub_airq_1/aqi_us_nowcast/config"
    assert config["device"] == {
        "identifiers": [MAC],
        "connections": [["mac", "02:99:aa:bb:cc:00"]],
    }
    assert config["name"] == "AQI NowCast (US)"
    assert config["default_entity_id"] == "sensor.airq_1_aqi_us_nowcast"
    # The node has its own "Dew Point" entity (sensor.airq_1_dew_point): the hub's gets _hub_.
    _, dew = sensor_config(Topics(), meta, "dew_point", "hub_x", 600)
    assert dew["default_entity_id"] == "sensor.airq_1_hub_dew_point"


def test_device_nobody_announces_gets_a_real_manufacturer_and_model() -> None:
    _, config = sensor_config(Topics(), DeviceMeta("buggy", kind="rc"), "cell_voltage_avg", "hub_x", 0)  # fmt: skip
    device = config["device"]
    assert device["identifiers"] == ["hub_buggy"]
    assert device["manufacturer"] and device["model"]
    assert "<unknown>" not in (device["manufacturer"], device["model"])
    assert config["name"] == "Cell voltage"


def test_names_follow_has_entity_name_style() -> None:
    assert sensor_name("pm2_5") == "PM2.5"
    assert sensor_name("comfort_score") == "Comfort score"
    names = {r.id: alert_config(Topics(), Rule.compile(r), DeviceMeta("d"), "h")[1]["name"]
             for r in all_builtin_rules()}  # fmt: skip
    assert names["air_co2_high"] == "CO2 high"
    assert names["rc_esc_temperature_critical"] == "ESC temperature critical"
    assert all("_" not in name and not name.startswith("Alert") for name in names.values())


def test_alert_classes_read_right_in_home_assistant() -> None:
    classes = {r.id: Rule.compile(r).device_class for r in all_builtin_rules()}
    assert classes["air_co2_high"] == "problem"  # not gas: "Detected" reads as a leak
    assert classes["air_voc_high"] == "problem"
    assert classes["air_humidity_high"] == "problem"  # not moisture: "Dry" when fine
    assert classes["rc_esc_temperature_critical"] == "heat"
    assert classes["air_temperature_low"] == "cold"
    assert classes["rc_cell_voltage_critical"] == "battery"
    assert set(classes.values()) <= {"problem", "heat", "cold", "battery"}


def test_alert_attributes_keep_value_at_firing_apart_from_current_value() -> None:
    rule = Rule.compile(
        RuleConfig.model_validate({"id": "co2_test", "metric": "co2", "threshold": 1000,
                                   "message": "{device}: CO2 reached {value:.0f} ppm"})
    )  # fmt: skip
    alert = Alert(id=7, rule="co2_test", device="airq-1", metric="co2", severity="warning",
                  state="firing", value=1250.0, threshold=1000, unit="ppm",
                  message="airq-1: CO2 reached 1100 ppm", device_class="problem",
                  started_ms=1_000, updated_ms=2_000)  # fmt: skip
    attributes = alert_attributes(alert, rule, value_at_firing=1100.0)
    assert attributes["value_at_firing"] == 1100.0
    assert attributes["value"] == 1250.0
    assert attributes["message"] == "airq-1: CO2 reached 1100 ppm"
    assert attributes["current_message"] == "airq-1: CO2 reached 1250 ppm"


def test_entity_moving_to_the_nodes_device_is_removed_first_then_announced_again(tmp_path: Any) -> None:  # fmt: skip
    """Home Assistant moves an entity on an updated config but keeps the old, now empty
    device: so the hub clears the entity first and announces it again on the next plan."""
    from hub.config import BrokerConfig
    from hub.ha.discovery import DiscoveryPublisher
    from hub.ha.settings import DiscoverySettings

    publisher = DiscoveryPublisher(
        DiscoverySettings(), BrokerConfig(), "hub_x", tmp_path / "ha_discovery.json", "t"
    )
    sent: list[tuple[str, bytes]] = []
    publisher._publish = lambda topic, payload, qos=1, retain=True: sent.append(  # type: ignore[method-assign]
        (topic, payload if isinstance(payload, bytes) else payload.encode())
    )
    topic, alone = sensor_config(Topics(), DeviceMeta("airq-1"), "comfort_score", "hub_x", 0)
    assert publisher.set_configs({topic: alone}) == set()
    assert sent[-1][0] == topic and orjson.loads(sent[-1][1])["device"]["identifiers"] == ["hub_airq_1"]  # fmt: skip
    _, joined = sensor_config(Topics(), _meta_with_node(), "comfort_score", "hub_x", 0)
    assert publisher.set_configs({topic: joined}) == {topic}
    assert sent[-1] == (topic, b"")  # removed: HA drops the entity and the empty device
    publisher.set_configs({topic: joined})
    assert orjson.loads(sent[-1][1])["device"]["connections"] == [["mac", "02:99:aa:bb:cc:00"]]
