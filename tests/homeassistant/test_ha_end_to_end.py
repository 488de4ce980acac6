"""End to end with a REAL Home Assistant Core: discovery entities, an alert turning a
binary_sensor on and off, automations from our blueprints reacting, hub_alert events on the bus.

Home Assistant is built by tools/homeassistant.sh (cached) and shared by the tests here
(conftest.py). If it cannot be installed the test is skipped with the reason, except with
CI=true, where that is a failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.homeassistant.harness import HomeAssistant
from tests.support.hubproc import HubProcess, Publisher, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.homeassistant, pytest.mark.mosquitto, pytest.mark.slow]

ALERT = "binary_sensor.buggy_rc_cell_voltage_critical"


AUTOMATIONS = [
    {
        "id": "hub_test_fan",
        "alias": "Hub test fan (blueprint)",
        "use_blueprint": {
            "path": "hub/hub_alert_fan.yaml",
            "input": {"alert_entities": [ALERT], "target_entities": ["input_boolean.hub_fan"]},
        },
    },
    {
        "id": "hub_test_notify",
        "alias": "Hub test notify (blueprint)",
        "use_blueprint": {
            "path": "hub/hub_alert_notify.yaml",
            "input": {
                "alert_entities": [ALERT],
                "notify_actions": [
                    {
                        "action": "input_boolean.turn_on",
                        "target": {"entity_id": "input_boolean.hub_alert_latch"},
                    }
                ],
            },
        },
    },
    {
        "id": "hub_test_event_firing",
        "alias": "hub_alert firing event",
        "triggers": [
            {
                "trigger": "event",
                "event_type": "hub_alert",
                "event_data": {
                    "kind": "firing",
                    "rule": "rc_cell_voltage_critical",
                    "device": "buggy",
                },
            }
        ],
        "actions": [
            {
                "action": "input_boolean.turn_on",
                "target": {"entity_id": "input_boolean.hub_event_firing"},
            }
        ],
    },
    {
        "id": "hub_test_event_resolved",
        "alias": "hub_alert resolved event",
        "triggers": [
            {
                "trigger": "event",
                "event_type": "hub_alert",
                "event_data": {"kind": "resolved", "rule": "rc_cell_voltage_critical"},
            }
        ],
        "actions": [
            {
                "action": "input_boolean.turn_on",
                "target": {"entity_id": "input_boolean.hub_event_resolved"},
            }
        ],
    },
]


@pytest.fixture
def stack(ha: HomeAssistant, ha_broker: Mosquitto, hub_dir: Path) -> Iterator[tuple[HomeAssistant, HubProcess, Publisher]]:  # fmt: skip
    ha.set_automations(AUTOMATIONS)
    for name in ("hub_fan", "hub_alert_latch", "hub_event_firing", "hub_event_resolved"):
        ha.post("/api/services/input_boolean/turn_off", {"entity_id": f"input_boolean.{name}"})
    hub = None
    publisher = None
    try:
        hub = HubProcess(hub_dir, ha_broker.url, {
            "homeassistant": {"rest": {"enabled": True, "url": ha.api_url, "token": ha.token}},
            "alerts": {"tick": "0.2s"},
        })  # fmt: skip
        hub.start()
        publisher = Publisher(ha_broker.host, ha_broker.port, "ha-test-pub")
        yield ha, hub, publisher
    finally:
        if publisher is not None:
            publisher.close()
        if hub is not None and hub.proc is not None:
            hub.stop()


def _send(publisher: Publisher, device: str, values: dict[str, float]) -> None:
    publisher.publish(
        f"hub/readings/{device}", orjson.dumps({"values": values, "source": "serial"})
    )
    publisher.flush()


def test_discovery_alert_blueprints_and_events(stack: tuple[HomeAssistant, HubProcess, Publisher]) -> None:  # fmt: skip
    ha, hub, publisher = stack
    # Normal driving: entities appear with the catalog's classes and units.
    for _ in range(3):
        _send(publisher, "buggy", {"cell_voltage_avg": 3.80, "esc_temperature": 41})
        _send(publisher, "airq-1", {"co2": 650})
        time.sleep(0.3)
    cell = ha.wait_state("sensor.buggy_cell_voltage_avg", "3.8")
    assert cell["attributes"]["device_class"] == "voltage"
    assert cell["attributes"]["unit_of_measurement"] == "V"
    esc = ha.wait_state("sensor.buggy_esc_temperature", "41")
    assert esc["attributes"]["device_class"] == "temperature"
    assert esc["attributes"]["unit_of_measurement"] == "°C"
    co2 = ha.wait_state("sensor.airq_1_co2", "650")
    assert co2["attributes"]["device_class"] == "carbon_dioxide"
    assert co2["attributes"]["unit_of_measurement"] == "ppm"
    alert = ha.wait_state(ALERT, "off")
    assert alert["attributes"]["device_class"] == "battery"  # "Low", not "Unsafe"
    heat = ha.wait_state("binary_sensor.buggy_rc_esc_temperature_critical", "off")
    assert heat["attributes"]["device_class"] == "heat"
    co2_high = ha.wait_state("binary_sensor.airq_1_air_co2_high", "off")
    assert co2_high["attributes"]["device_class"] == "problem"  # not "gas": that reads as a leak
    assert co2_high["attributes"]["friendly_name"] == "airq-1 CO2 high"
    hub_sensor = wait_for(lambda: ha.state("sensor.hub_readings_stored"), 20, what="hub sensor")
    assert hub_sensor["state"] not in ("unavailable",)
    assert ha.state("input_boolean.hub_fan")["state"] == "off"  # type: ignore[index]

    # Cell sag: 3.20 V/cell under 3.30 for more than the rule's 2 s.
    for _ in range(15):
        _send(publisher, "buggy", {"cell_voltage_avg": 3.20})
        time.sleep(0.2)
    on = ha.wait_state(ALERT, "on", timeout=10)
    assert on["attributes"]["value"] == pytest.approx(3.2)
    assert on["attributes"]["value_at_firing"] == pytest.approx(3.2)
    assert on["attributes"]["threshold"] == pytest.approx(3.3)
    assert "3.20" in on["attributes"]["message"] and on["attributes"]["since"]
    ha.wait_state("input_boolean.hub_fan", "on")  # the fan blueprint
    ha.wait_state("input_boolean.hub_alert_latch", "on")  # the notify blueprint
    ha.wait_state("input_boolean.hub_event_firing", "on")  # hub_alert event over REST
    assert ha.state("input_boolean.hub_event_resolved")["state"] == "off"  # type: ignore[index]

    # Recovery past the clear threshold (3.40): the alert clears and the fan stops.
    _send(publisher, "buggy", {"cell_voltage_avg": 3.70})
    ha.wait_state(ALERT, "off", timeout=10)
    ha.wait_state("input_boolean.hub_fan", "off")
    ha.wait_state("input_boolean.hub_event_resolved", "on")
    status = wait_for(lambda: hub.status().get("alerts", {}).get("rest", {}).get("sent", 0) >= 2 and hub.status(), 10, what="REST sent")  # fmt: skip
    assert status["alerts"]["rest"]["failures"] == 0
    rows = hub.query("SELECT rule, device, state FROM alerts")
    assert ("rc_cell_voltage_critical", "buggy", "resolved") in rows


def test_removed_rule_clears_its_entity(ha: HomeAssistant, ha_broker: Mosquitto, hub_dir: Path) -> None:  # fmt: skip
    hub = HubProcess(hub_dir, ha_broker.url, {"alerts": {"tick": "0.2s"}})
    publisher = None
    try:
        hub.start()
        publisher = Publisher(ha_broker.host, ha_broker.port, "ha-test-pub2")
        _send(publisher, "buggy", {"esc_temperature": 40})
        ha.wait_state("binary_sensor.buggy_rc_esc_temperature_critical", "off")
        hub.stop()
        # Switch the rule off and restart: its retained config is cleared, HA drops the entity.
        hub2 = HubProcess(hub_dir, ha_broker.url, {"alerts": {
            "tick": "0.2s", "overrides": {"rc_esc_temperature_critical": {"enabled": False}}}})  # fmt: skip
        hub = hub2
        hub.start()
        wait_for(lambda: ha.state("binary_sensor.buggy_rc_esc_temperature_critical") is None,
                 20, what="entity removed")  # fmt: skip
        assert ha.state("binary_sensor.buggy_rc_esc_temperature_high") is not None
    finally:
        if publisher is not None:
            publisher.close()
        if hub.proc is not None:
            hub.stop()
