"""Per-device secrets: native API key, OTA password, MQTT credentials, and where they live.

The firmware secrets file is ESPHome's `secrets.yaml`: a flat YAML mapping that node configs
read with `!secret`. The hub keeps its keys, named `<device>_api_key`, `<device>_ota_password`,
`<device>_mqtt_username` and `<device>_mqtt_password` (with `-` in the device name written as
`_`, as the firmware configs expect), in a hub-managed block, so the user's
`wifi_ssid` and friends stay where they are. The file is written with mode 0600.

Nothing here logs a secret, and the secret types hide their values from `repr`.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from hub.provision.managed_files import (
    ManagedFileError,
    join_managed,
    read_text,
    split_managed,
    write_atomic,
)

log = logging.getLogger(__name__)

API_KEY_BYTES = 32  # ESPHome's `api: encryption: key:` is base64 of exactly 32 bytes
SUFFIXES = ("api_key", "ota_password", "mqtt_username", "mqtt_password")

RandomBytes = Callable[[int], bytes]


def new_api_key(random_bytes: RandomBytes = secrets.token_bytes) -> str:
    """A native API encryption key: base64 of 32 random bytes, as `esphome wizard` makes."""
    return base64.b64encode(random_bytes(API_KEY_BYTES)).decode("ascii")


def new_password(random_bytes: RandomBytes = secrets.token_bytes) -> str:
    """32 hex characters (128 bits): safe in YAML, URLs, shells and MQTT clients alike."""
    return random_bytes(16).hex()


@dataclass(frozen=True)
class DeviceSecrets:
    """What one device needs to join: its values never appear in `repr` or logs."""

    mqtt_username: str
    api_key: str = field(repr=False)
    ota_password: str = field(repr=False)
    mqtt_password: str = field(repr=False)

    @classmethod
    def generate(
        cls, mqtt_username: str, random_bytes: RandomBytes = secrets.token_bytes
    ) -> DeviceSecrets:
        return cls(
            mqtt_username=mqtt_username,
            api_key=new_api_key(random_bytes),
            ota_password=new_password(random_bytes),
            mqtt_password=new_password(random_bytes),
        )

    def rotated(
        self, parts: frozenset[str], random_bytes: RandomBytes = secrets.token_bytes
    ) -> DeviceSecrets:
        """New values for the named parts (`api`, `ota`, `mqtt`); the user name stays."""
        return replace(
            self,
            api_key=new_api_key(random_bytes) if "api" in parts else self.api_key,
            ota_password=new_password(random_bytes) if "ota" in parts else self.ota_password,
            mqtt_password=new_password(random_bytes) if "mqtt" in parts else self.mqtt_password,
        )


def secret_prefix(device: str) -> str:
    """`airq-kitchen` -> `airq_kitchen`: the firmware configs' convention (firmware/README.md)."""
    return device.replace("-", "_")


def secret_keys(device: str) -> dict[str, str]:
    """suffix -> the key a node config names with `!secret`, e.g. `airq_kitchen_api_key`."""
    return {suffix: f"{secret_prefix(device)}_{suffix}" for suffix in SUFFIXES}


def to_entries(device: str, value: DeviceSecrets) -> dict[str, str]:
    keys = secret_keys(device)
    return {
        keys["api_key"]: value.api_key,
        keys["ota_password"]: value.ota_password,
        keys["mqtt_username"]: value.mqtt_username,
        keys["mqtt_password"]: value.mqtt_password,
    }


def from_entries(device: str, entries: Mapping[str, str]) -> DeviceSecrets | None:
    keys = secret_keys(device)
    if not all(key in entries for key in keys.values()):
        return None
    return DeviceSecrets(
        mqtt_username=entries[keys["mqtt_username"]],
        api_key=entries[keys["api_key"]],
        ota_password=entries[keys["ota_password"]],
        mqtt_password=entries[keys["mqtt_password"]],
    )


def _load_mapping(text: str, what: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ManagedFileError(f"{what} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ManagedFileError(f"{what} must be a YAML mapping of name: value")
    return loaded


def render_entries(entries: Mapping[str, str]) -> str:
    """`key: "value"` lines; values as JSON strings, which YAML reads back unchanged."""
    body = "".join(f"{key}: {json.dumps(entries[key])}\n" for key in sorted(entries))
    if _load_mapping(body, "secrets block") != dict(entries):  # a key YAML would misread
        raise ManagedFileError("a secret name does not survive a YAML round trip")
    return body


class SecretsFile:
    """The firmware secrets file: the user's own keys kept, the hub's block rewritten."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, str]:
        """The hub-managed entries (name -> value)."""
        _, body = split_managed(read_text(self.path), what=str(self.path))
        loaded = _load_mapping(body, f"hub-managed block of {self.path}")
        return {str(k): str(v) for k, v in loaded.items()}

    def device(self, name: str) -> DeviceSecrets | None:
        return from_entries(name, self.load())

    def save(self, entries: Mapping[str, str]) -> None:
        user_text, _ = split_managed(read_text(self.path), what=str(self.path))
        try:
            own = _load_mapping(user_text, str(self.path))
        except ManagedFileError:
            own = {}  # the user's part is theirs to fix; ESPHome will point at the line
            log.warning(
                "The user part of %s is not valid YAML; hub entries written anyway", self.path
            )
        clash = sorted(set(own) & set(entries))
        if clash:
            raise ManagedFileError(
                f"{self.path} already defines {', '.join(clash)} outside the hub-managed block"
            )
        write_atomic(self.path, join_managed(user_text, render_entries(entries)), mode=0o600)


@dataclass(frozen=True)
class HubCredentials:
    """The hub's own MQTT login (least privilege: reads device topics, writes hub/ and HA)."""

    username: str
    password: str = field(repr=False)

    @classmethod
    def load(cls, path: Path) -> HubCredentials | None:
        text = read_text(path)
        if not text:
            return None
        data = _load_mapping(text, str(path))
        try:
            return cls(username=str(data["mqtt_username"]), password=str(data["mqtt_password"]))
        except KeyError as exc:
            raise ManagedFileError(f"{path} has no {exc.args[0]}") from None

    def save(self, path: Path) -> None:
        text = (
            "# The hub's MQTT login, made by `hub device`. Give it to the hub as\n"
            "# broker.username / broker.password (or HUB_BROKER__PASSWORD). Keep it private.\n"
            + render_entries({"mqtt_username": self.username, "mqtt_password": self.password})
        )
        write_atomic(path, text, mode=0o600)
