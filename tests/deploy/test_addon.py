"""deploy/homeassistant-addon: the Supervisor's add-on rules, and options -> a valid hub.yaml.

A config.yaml the Supervisor rejects is skipped with only a log line (the add-on silently
does not appear), so the rules are checked here. They are transcribed from the Supervisor's
source, home-assistant/supervisor at commit 00788af8aec7af74cde11ecd188a13cea08c8c2a:

- supervisor/addons/validate.py `_SCHEMA_ADDON_CONFIG`: required name, version, slug,
  description, arch; arch in ARCH_ALL; slug matches RE_SLUG; startup, boot, backup enums;
  `services` entries match RE_SERVICE `^(mqtt|mysql):(provide|want|need)$`; `watchdog` and
  `webui` patterns; `ingress_port` a network port; `map` entries match RE_VOLUME; unknown
  keys are dropped (REMOVE_EXTRA), so a misspelt key is checked against the known ones here.
- supervisor/addons/options.py RE_SCHEMA_ELEMENT: what a `schema:` value may be.
- supervisor/addons/validate.py SCHEMA_BUILD_CONFIG: build.yaml's build_from per arch.
- supervisor/addons/options.py: every option that is not optional (no trailing `?`) needs a
  value in `options:`; a `device` option may not be given a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.addon import options_to_config
from hub.config.loader import load_config

ADDON = Path(__file__).resolve().parents[2] / "deploy" / "homeassistant-addon"

RE_SLUG = re.compile(r"^[-_.A-Za-z0-9]+$")  # supervisor/addons/const.py
RE_SERVICE = re.compile(r"^(?P<service>mqtt|mysql):(?P<rights>provide|want|need)$")
RE_WATCHDOG = re.compile(r"^(?:https?|\[PROTO:\w+\]|tcp):\/\/\[HOST\]:(\[PORT:\d+\]|\d+).*$")
RE_VOLUME = re.compile(
    r"^(data|config|ssl|addons|backup|share|media|homeassistant_config|all_addon_configs|addon_config)(?::(rw|ro))?$"
)
RE_SCHEMA_ELEMENT = re.compile(
    r"^(?:"
    r"|bool"
    r"|email"
    r"|url"
    r"|port"
    r"|device(?:\((?P<filter>subsystem=[a-z]+)\))?"
    r"|str(?:\((?P<s_min>\d+)?,(?P<s_max>\d+)?\))?"
    r"|password(?:\((?P<p_min>\d+)?,(?P<p_max>\d+)?\))?"
    r"|int(?:\((?P<i_min>-?\d+)?,(?P<i_max>-?\d+)?\))?"
    r"|float(?:\((?P<f_min>-?\d*\.?\d+)?,(?P<f_max>-?\d*\.?\d+)?\))?"
    r"|match\((?P<match>.*)\)"
    r"|list\((?P<list>.+)\)"
    r")\??$"
)
RE_DOCKER_IMAGE_BUILD = re.compile(
    r"^([a-zA-Z\-\.:\d{}]+/)*?([\-\w{}]+)/([\-\w{}]+)(:[\.\-\w{}]+)?$"
)
ARCH_ALL = {"aarch64", "amd64", "armhf", "armv7", "i386"}
STARTUP = {"initialize", "system", "services", "application", "once"}
BOOT = {"auto", "manual", "manual_only"}
BACKUP = {"hot", "cold"}
KNOWN_KEYS = {
    "name", "version", "slug", "description", "arch", "machine", "url", "startup", "boot",
    "init", "advanced", "stage", "ports", "ports_description", "watchdog", "webui", "ingress",
    "ingress_port", "ingress_entry", "ingress_stream", "panel_icon", "panel_title",
    "panel_admin", "homeassistant", "host_network", "host_pid", "host_ipc", "host_uts",
    "host_dbus", "devices", "udev", "tmpfs", "map", "environment", "privileged", "apparmor",
    "full_access", "audio", "video", "gpio", "usb", "uart", "devicetree", "kernel_modules",
    "realtime", "hassio_api", "hassio_role", "homeassistant_api", "stdin", "legacy",
    "docker_api", "auth_api", "services", "discovery", "backup_exclude", "backup_pre",
    "backup_post", "restore_pre", "restore_post", "backup", "options", "schema", "image",
    "ulimits", "timeout", "journald", "breaking_versions",
}  # fmt: skip


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return dict(yaml.safe_load((ADDON / "config.yaml").read_text()))


def problems(config: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for key in ("name", "version", "slug", "description", "arch"):
        if not config.get(key):
            found.append(f"missing {key}")
    found += [f"unknown key {k}" for k in config if k not in KNOWN_KEYS]
    if not isinstance(config.get("version"), str):
        found.append("version must be a string")
    if not RE_SLUG.match(str(config.get("slug", ""))):
        found.append("bad slug")
    found += [f"bad arch {a}" for a in config.get("arch", []) if a not in ARCH_ALL]
    if config.get("startup", "application") not in STARTUP:
        found.append("bad startup")
    if config.get("boot", "auto") not in BOOT:
        found.append("bad boot")
    if config.get("backup", "hot") not in BACKUP:
        found.append("bad backup")
    found += [f"bad service {s}" for s in config.get("services", []) if not RE_SERVICE.match(s)]
    if "watchdog" in config and not RE_WATCHDOG.match(config["watchdog"]):
        found.append("bad watchdog")
    port = config.get("ingress_port", 8099)
    if not (isinstance(port, int) and 0 <= port <= 65535):
        found.append("bad ingress_port")
    found += [
        f"bad map {m}"
        for m in config.get("map", [])
        if isinstance(m, str) and not RE_VOLUME.match(m)
    ]
    schema, options = config.get("schema", {}), config.get("options", {})
    for key, element in schema.items():
        if not isinstance(element, str) or not RE_SCHEMA_ELEMENT.match(element):
            found.append(f"bad schema element {key}: {element!r}")
            continue
        if not element.endswith("?") and key not in options:
            found.append(f"required option {key} has no value in options")
        if element.startswith("device") and options.get(key):
            found.append(f"device option {key} may not have a default")
    found += [f"option {k} is not in schema" for k in options if k not in schema]
    return found


def test_config_follows_the_supervisor_rules(config: dict[str, Any]) -> None:
    assert problems(config) == []


def test_the_rules_catch_mistakes(config: dict[str, Any]) -> None:
    assert "unknown key ingres" in problems({**config, "ingres": True})
    assert "bad service mqtt:required" in problems({**config, "services": ["mqtt:required"]})
    bad_schema = {**config, "schema": {**config["schema"], "log_level": "string"}}
    assert any("bad schema element log_level" in p for p in problems(bad_schema))
    assert "bad arch x86_64" in problems({**config, "arch": ["x86_64"]})


def test_what_the_issue_asks_for(config: dict[str, Any]) -> None:
    assert "mqtt:need" in config["services"]  # the Mosquitto add-on's broker and a login
    assert config["ingress"] is True and config["ingress_port"] == 8090  # the dashboard
    assert config["uart"] is True  # serial adapters for the bench logger
    assert config["schema"]["serial_port"].startswith("device(subsystem=tty)")
    assert set(config["arch"]) == {"aarch64", "amd64"}


def test_build_yaml_follows_the_supervisor_rules() -> None:
    build = yaml.safe_load((ADDON / "build.yaml").read_text())
    assert set(build["build_from"]) <= ARCH_ALL
    for image in build["build_from"].values():
        assert RE_DOCKER_IMAGE_BUILD.match(image), image
    dockerfile = (ADDON / "Dockerfile").read_text()
    assert "ARG BUILD_FROM" in dockerfile and "FROM ${BUILD_FROM}" in dockerfile


MQTT = {
    "host": "core-mosquitto",
    "port": 1883,
    "ssl": False,
    "username": "addons",
    "password": "pw",
}


def test_default_options_map_to_a_valid_hub_yaml(config: dict[str, Any]) -> None:
    hub = load_config_from(options_to_config(config["options"], MQTT))
    assert hub.broker.url == "mqtt://core-mosquitto:1883"
    assert hub.broker.username == "addons"
    assert hub.broker.password is not None and hub.broker.password.get_secret_value() == "pw"
    assert str(hub.data_dir) == "/data" and hub.web.port == config["ingress_port"]
    assert not hub.influx.enabled


def test_every_option_reaches_hub_yaml(config: dict[str, Any]) -> None:
    options = {
        **config["options"],
        "log_level": "debug",
        "web_public_read": True,
        "ha_discovery": False,
        "retention_raw_days": 7,
        "influx_enabled": True,
        "influx_url": "http://influx.lan:8086",
        "influx_token": "tok",
        "serial_port": "/dev/ttyUSB0",
        "serial_vehicle": "crawler",
    }
    hub = load_config_from(options_to_config(options, {**MQTT, "ssl": True}))
    assert hub.log.level == "debug"
    assert hub.web.public_read is True
    assert hub.homeassistant.discovery.enabled is False
    assert hub.store.retention.raw == 7 * 86400
    assert hub.influx.enabled and hub.influx.url == "http://influx.lan:8086"
    assert hub.influx.token is not None and hub.influx.token.get_secret_value() == "tok"
    assert hub.serial.port == "/dev/ttyUSB0" and hub.serial.vehicle == "crawler"
    assert hub.broker.url == "mqtts://core-mosquitto:1883"


def load_config_from(data: dict[str, Any]) -> Any:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        yaml.safe_dump(data, handle)
        handle.flush()
        return load_config(handle.name, environ={})
