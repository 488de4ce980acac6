"""Every firmware YAML passes the real `esphome config` (ESPHome 2026.10.0), warning-free.

The firmware tree is copied to a temporary folder with secrets.yaml made from
secrets.example.yaml, so the check also proves that the example names every secret.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.esphome_host import FIRMWARE

pytestmark = pytest.mark.esphome

NODE_FILES = sorted(p.name for p in FIRMWARE.glob("*.yaml") if not p.name.startswith("secrets"))
HOST_FILES = sorted(p.name for p in (FIRMWARE / "host").glob("*.yaml"))
SECRET_REF = re.compile(r"!secret\s+([A-Za-z0-9_]+)")


@pytest.fixture
def firmware_copy(tmp_path: Path) -> Path:
    tree = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, tree, ignore=shutil.ignore_patterns(".esphome", "__pycache__"))
    shutil.copyfile(tree / "secrets.example.yaml", tree / "secrets.yaml")
    return tree


def esphome_config(esphome: Path, yaml_path: Path) -> str:
    proc = subprocess.run(
        [str(esphome), "config", yaml_path.name],
        cwd=yaml_path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"esphome config {yaml_path.name} failed:\n{output}"
    warnings = [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, f"esphome config {yaml_path.name} warned:\n" + "\n".join(warnings)
    return output


def test_there_are_node_files() -> None:
    assert {"airq-node.yaml", "rc-bridge.yaml"} <= set(NODE_FILES)
    assert {"hub-test-node.yaml", "rc-bridge-host.yaml"} <= set(HOST_FILES)


@pytest.mark.parametrize("name", NODE_FILES)
def test_node_config_is_valid(esphome_bin: Path, firmware_copy: Path, name: str) -> None:
    output = esphome_config(esphome_bin, firmware_copy / name)
    node = name.removesuffix(".yaml")
    # The hub relies on these: status topic with birth / will, discovery, encrypted API.
    assert f"topic: {node}/status" in output
    assert "payload: online" in output and "payload: offline" in output
    assert "discovery: true" in output
    assert f"key: !secret '{node.replace('-', '_')}_api_key'" in output


@pytest.mark.parametrize("name", HOST_FILES)
def test_host_config_is_valid(esphome_bin: Path, firmware_copy: Path, name: str) -> None:
    output = esphome_config(esphome_bin, firmware_copy / "host" / name)
    assert "mqtt:" not in output
    assert "disabled: true" in output  # mDNS off: no multicast from tests


def test_airq_node_publishes_the_hub_metric_names(esphome_bin: Path, firmware_copy: Path) -> None:
    output = esphome_config(esphome_bin, firmware_copy / "airq-node.yaml")
    names = set(re.findall(r"^\s+name: (.+)$", output, re.MULTILINE))
    # object_id = name lower-cased, spaces and '.' -> '_': pm2_5, co2, voc_index, ...
    for name in ("PM1", "PM2.5", "PM10", "PM2.5 CF1", "CO2", "VOC Index", "NOx Index"):
        assert name in names
    for name in ("Temperature", "Humidity", "Pressure"):
        assert name in names
    # With a BME280 fitted, the SGP41 compensates with it, not with the self-heated SCD41.
    assert "temperature_source: bme280_temperature" in output
    assert "humidity_source: bme280_humidity" in output


# A user picks the packages for the sensors they own; each subset must stand on its own.
PACKAGE_SETS = {
    "pm-only": ["pms5003"],
    "co2-voc": ["i2c", "scd41", "sgp41"],
    "bme680-voc": ["i2c", "bme680", "sgp41"],
    "bme280-only": ["i2c", "bme280"],
}
EXTRA_SUBSTITUTIONS = {
    "bme680-voc": {
        "sgp41_temperature_source": "bme680_temperature",
        "sgp41_humidity_source": "bme680_humidity",
    },
}


@pytest.mark.parametrize("label", sorted(PACKAGE_SETS))
def test_package_subsets(esphome_bin: Path, firmware_copy: Path, label: str) -> None:
    substitutions = {
        "node_name": f"airq-{label}",
        "friendly_name": f"Air {label}",
        "api_key": "!secret airq_node_api_key",
        "mqtt_password": "!secret airq_node_mqtt_password",
        **EXTRA_SUBSTITUTIONS.get(label, {}),
    }
    packages = ["base", *PACKAGE_SETS[label]]
    text = "substitutions:\n"
    text += "".join(f"  {key}: {value}\n" for key, value in substitutions.items())
    text += "packages:\n"
    text += "".join(f"  {p}: !include packages/{p}.yaml\n" for p in packages)
    node = firmware_copy / f"airq-{label}.yaml"
    node.write_text(text)
    esphome_config(esphome_bin, node)


def test_secrets_example_names_exactly_the_secrets_used() -> None:
    used: set[str] = set()
    for path in FIRMWARE.rglob("*.yaml"):
        if path.name != "secrets.example.yaml":
            used |= set(SECRET_REF.findall(path.read_text()))
    example = FIRMWARE / "secrets.example.yaml"
    defined = set(re.findall(r"^([A-Za-z0-9_]+):", example.read_text(), re.MULTILINE))
    assert used == defined


def test_rc_bridge_publishes_lines_to_its_hub_topic(esphome_bin: Path, firmware_copy: Path) -> None:
    output = esphome_config(esphome_bin, firmware_copy / "rc-bridge.yaml")
    assert "topic: hub/bridge/rc-bridge" in output
    assert "protocol: kiss" in output and "baud_rate: 115200" in output
