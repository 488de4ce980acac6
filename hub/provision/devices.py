"""The device registry: one least-privilege identity per device, kept in step everywhere.

For every device the hub holds a native API key, an OTA password and an MQTT login (in the
firmware secrets file), a Mosquitto password entry and an ACL block that lets the device
write only under its own topic prefix. `add`, `remove` and `rotate` change all of them
together, under a lock, and every command regenerates the password and ACL blocks from the
registry and the secrets file, so a crash half-way is repaired by the next command.

Files (defaults under the data directory, all covered by `.gitignore` via `hub-data/`):
  devices.json        the registry (names, kinds, dates; no secrets)
  secrets.yaml        the firmware secrets, for ESPHome's `!secret` (mode 0600)
  hub-mqtt.yaml       the hub's own MQTT login (mode 0600)
  mosquitto/passwd    Mosquitto `password_file`
  mosquitto/acl       Mosquitto `acl_file`
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.config import BrokerConfig

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from hub.provision import mosquitto_auth
from hub.provision.managed_files import ManagedFileError, read_text, write_atomic
from hub.provision.mosquitto_auth import AclRule, AclUser
from hub.provision.secrets import (
    DeviceSecrets,
    HubCredentials,
    RandomBytes,
    SecretsFile,
    from_entries,
    new_password,
    secret_prefix,
    to_entries,
)

log = logging.getLogger(__name__)

Kind = Literal["airq", "rc-bridge"]
KINDS: tuple[Kind, ...] = ("airq", "rc-bridge")
ROTATABLE = frozenset({"api", "ota", "mqtt"})

# ESPHome's own rule for node names (lower case, digits, '-', '_'): the name is the MQTT user
# name, the topic prefix and the discovery node id at once.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Prefixes that belong to someone else: a device with one of these names would be granted
# the hub's or Home Assistant's topics.
RESERVED_NAMES = frozenset({"hub", "homeassistant", "esphome", "sys"})
REGISTRY_VERSION = 1


class DeviceError(ValueError):
    """A device command cannot be done; the message says why and what to do."""


class BrokerError(DeviceError):
    """The broker could not be reached or refused what the hub asked."""


# --- topic policy -------------------------------------------------------------------------


def device_acl(name: str, kind: Kind) -> AclUser:
    """What a device may do: write under its own prefix and its own discovery, nothing else."""
    rules = [
        AclRule("write", f"{name}/#"),  # states, <name>/status (LWT), <name>/debug
        AclRule("read", f"{name}/+/+/command"),  # its switches and buttons
        AclRule("read", "homeassistant/status"),  # ESPHome re-sends discovery when HA starts
        AclRule("write", f"homeassistant/+/{name}/+/config"),  # its own discovery only
    ]
    if kind == "rc-bridge":
        rules.append(AclRule("write", f"hub/readings/{name}"))  # hub JSON, its own device only
        rules.append(AclRule("write", f"hub/bridge/{name}"))  # raw ESC frames, bridge line protocol
    return AclUser(name, tuple(rules), comment=f"device {name} ({kind})")


def hub_acl(username: str) -> AclUser:
    """What the hub needs: read device states, availability, discovery and bridges' readings;
    write its own topics and its Home Assistant discovery."""
    rules = (
        AclRule("read", "+/sensor/+/state"),
        AclRule("read", "+/binary_sensor/+/state"),
        AclRule("read", "+/text_sensor/+/state"),
        AclRule("read", "+/status"),
        AclRule("read", "homeassistant/+/+/+/config"),
        AclRule("read", "hub/readings/#"),
        AclRule("read", "hub/bridge/+"),
        AclRule("read", "hub/devices/+/availability"),
        AclRule("write", "hub/#"),
        AclRule("write", "homeassistant/#"),
    )
    return AclUser(username, rules, comment="the hub itself")


# --- registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    name: str
    kind: Kind
    added: str
    rotated: str | None = None

    @property
    def topic_prefix(self) -> str:
        return self.name

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "added": self.added, "rotated": self.rotated}


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    secrets_file: Path
    passwd_file: Path
    acl_file: Path
    registry_file: Path
    hub_credentials_file: Path

    @classmethod
    def under(
        cls,
        data_dir: Path,
        *,
        secrets_file: Path | None = None,
        passwd_file: Path | None = None,
        acl_file: Path | None = None,
        hub_credentials_file: Path | None = None,
    ) -> Paths:
        return cls(
            data_dir=data_dir,
            secrets_file=secrets_file or data_dir / "secrets.yaml",
            passwd_file=passwd_file or data_dir / "mosquitto" / "passwd",
            acl_file=acl_file or data_dir / "mosquitto" / "acl",
            registry_file=data_dir / "devices.json",
            hub_credentials_file=hub_credentials_file or data_dir / "hub-mqtt.yaml",
        )


def check_name(name: str, hub_username: str) -> str:
    if not NAME_RE.match(name):
        raise DeviceError(
            f"device name {name!r} must be 1-63 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit (the ESPHome node name)"
        )
    if name in RESERVED_NAMES or name == hub_username:
        raise DeviceError(f"device name {name!r} is reserved: its topics belong to the hub or HA")
    if name.startswith(("hub-", "hub_")):
        # The name is the login, and the broker makes the login the client id
        # (use_username_as_clientid): a "hub-..." login could take over the hub's session.
        raise DeviceError(
            f"device name {name!r} is reserved: names starting with 'hub-' are the hub's client ids"
        )
    return name


def now_iso(clock: Callable[[], float] = time.time) -> str:
    return datetime.fromtimestamp(clock(), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class DeviceRegistry:
    """add / list / remove / rotate, keeping secrets, password file and ACL in step."""

    paths: Paths
    hub_username: str = "hub"
    reload: Callable[[], object] | None = None  # called after the broker files changed
    clock: Callable[[], float] = time.time
    random_bytes: RandomBytes = field(default=secrets.token_bytes, repr=False)

    def __post_init__(self) -> None:
        mosquitto_auth.check_username(self.hub_username)

    # -- reading -------------------------------------------------------------------------

    def devices(self) -> list[Device]:
        return sorted(self._load().values(), key=lambda d: d.name)

    def get(self, name: str) -> Device:
        devices = self._load()
        if name not in devices:
            raise DeviceError(f"no device named {name!r} (see `hub device list`)")
        return devices[name]

    def hub_credentials(self) -> HubCredentials:
        """The hub's login, made (and written to the password file) on first use."""
        with self._locked():
            if HubCredentials.load(self.paths.hub_credentials_file) is None:
                devices = self._load()  # made together with its password-file entry
                self._write(devices, self._secret_entries(devices))
            return self._hub_credentials(create=False)

    # -- changing ------------------------------------------------------------------------

    def add(self, name: str, kind: Kind) -> Device:
        check_name(name, self.hub_username)
        if kind not in KINDS:
            raise DeviceError(f"device kind {kind!r} is not one of {', '.join(KINDS)}")
        with self._locked():
            devices = self._load()
            if name in devices:
                raise DeviceError(f"device {name!r} already exists: use `hub device rotate {name}`")
            twin = next((d for d in devices if secret_prefix(d) == secret_prefix(name)), None)
            if twin is not None:
                raise DeviceError(
                    f"device {name!r} would share secret names ({secret_prefix(name)}_*) with "
                    f"{twin!r}: pick a name that differs by more than '-' and '_'"
                )
            device = Device(name, kind, added=now_iso(self.clock))
            devices[name] = device
            entries = self._secret_entries(devices)
            entries.update(to_entries(name, DeviceSecrets.generate(name, self.random_bytes)))
            self._write(devices, entries)
        log.info("Added device %s (%s)", name, kind)
        return device

    def remove(
        self,
        name: str,
        *,
        broker_url: str | None = None,
        settle: float = 0.5,
        broker: BrokerConfig | None = None,
    ) -> list[str]:
        """Forget a device; with `broker_url`, also clear its retained discovery there.

        Returns the discovery topics that were cleared. The password and ACL entries go first
        (and the broker reloads), so the device is locked out before its discovery is cleared
        and cannot publish it again.
        """
        with self._locked():
            devices = self._load()
            if name not in devices:
                raise DeviceError(f"no device named {name!r} (see `hub device list`)")
            del devices[name]
            self._write(devices, self._secret_entries(devices))
            hub = self._hub_credentials(create=True)
        log.info("Removed device %s", name)
        if broker_url is None:
            return []
        cleared = clear_retained_discovery(broker_url, hub, name, settle=settle, broker=broker)
        log.info("Cleared %d retained discovery topic(s) of %s", len(cleared), name)
        return cleared

    def rotate(self, name: str, parts: frozenset[str] = ROTATABLE) -> None:
        """New secrets for a device (or, given the hub's user name, a new hub password)."""
        unknown = parts - ROTATABLE
        if unknown or not parts:
            raise DeviceError(f"rotate one or more of {', '.join(sorted(ROTATABLE))}")
        with self._locked():
            devices = self._load()
            if name == self.hub_username:
                hub = HubCredentials(self.hub_username, new_password(self.random_bytes))
                hub.save(self.paths.hub_credentials_file)
                self._write(devices, self._secret_entries(devices), hub)
                log.info("Rotated the hub's MQTT password")
                return
            if name not in devices:
                raise DeviceError(f"no device named {name!r} (see `hub device list`)")
            entries = self._secret_entries(devices)
            current = from_entries(name, entries)
            fresh = (
                current.rotated(parts, self.random_bytes)
                if current is not None
                else DeviceSecrets.generate(name, self.random_bytes)  # secrets file was lost
            )
            entries.update(to_entries(name, fresh))
            devices[name] = Device(
                name, devices[name].kind, devices[name].added, now_iso(self.clock)
            )
            self._write(devices, entries)
        log.info("Rotated %s of device %s", ", ".join(sorted(parts)), name)

    def sync(self) -> None:
        """Rewrite the password and ACL blocks from the registry and the secrets file."""
        with self._locked():
            devices = self._load()
            self._write(devices, self._secret_entries(devices))

    # -- internals -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.paths.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.paths.data_dir / ".devices.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _load(self) -> dict[str, Device]:
        text = read_text(self.paths.registry_file)
        if not text.strip():
            return {}
        try:
            data = json.loads(text)
            devices = {
                name: Device(name, entry["kind"], entry["added"], entry.get("rotated"))
                for name, entry in data["devices"].items()
            }
            for device in devices.values():
                if device.kind not in KINDS:
                    raise ValueError(f"device {device.name} has unknown kind {device.kind!r}")
            return devices
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DeviceError(
                f"{self.paths.registry_file} is damaged ({exc!r}): fix or restore it"
            ) from None

    def _secret_entries(self, devices: dict[str, Device]) -> dict[str, str]:
        """The hub's secrets for the registered devices; leftovers of a crash are dropped."""
        loaded = SecretsFile(self.paths.secrets_file).load()
        entries: dict[str, str] = {}
        for name in devices:
            found = from_entries(name, loaded)
            if found is not None:
                entries.update(to_entries(name, found))
        return entries

    def _hub_credentials(self, *, create: bool) -> HubCredentials:
        hub = HubCredentials.load(self.paths.hub_credentials_file)
        if hub is not None and hub.username == self.hub_username:
            return hub
        if hub is not None:
            raise DeviceError(
                f"{self.paths.hub_credentials_file} holds user {hub.username!r}, not "
                f"{self.hub_username!r}: pass --hub-user {hub.username} or move the file away"
            )
        if not create:
            raise DeviceError(f"no hub credentials in {self.paths.hub_credentials_file}")
        hub = HubCredentials(self.hub_username, new_password(self.random_bytes))
        hub.save(self.paths.hub_credentials_file)
        log.info("Created the hub's MQTT user %s", self.hub_username)
        return hub

    def _write(
        self, devices: dict[str, Device], entries: dict[str, str], hub: HubCredentials | None = None
    ) -> None:
        hub = hub or self._hub_credentials(create=True)
        passwords = {hub.username: hub.password}
        acl = [hub_acl(hub.username)]
        missing = []
        for name in sorted(devices):
            found = from_entries(name, entries)
            if found is None:
                missing.append(name)
                continue
            passwords[found.mqtt_username] = found.mqtt_password
            acl.append(device_acl(name, devices[name].kind))
        if missing:
            log.warning(
                "No secrets for %s in %s: they cannot connect until `hub device rotate NAME`",
                ", ".join(missing),
                self.paths.secrets_file,
            )
        try:
            # Broker files first: a removal revokes access before anything else changes.
            passwd = mosquitto_auth.passwd_text(read_text(self.paths.passwd_file), passwords)
            acl_text = mosquitto_auth.acl_text(read_text(self.paths.acl_file), acl)
            changed = passwd != read_text(self.paths.passwd_file) or acl_text != read_text(
                self.paths.acl_file
            )
            write_atomic(self.paths.passwd_file, passwd, mode=0o640)
            write_atomic(self.paths.acl_file, acl_text, mode=0o640)
            SecretsFile(self.paths.secrets_file).save(entries)
        except ManagedFileError as exc:
            raise DeviceError(str(exc)) from None
        registry = {
            "version": REGISTRY_VERSION,
            "hub_user": hub.username,
            "devices": {name: devices[name].to_json() for name in sorted(devices)},
        }
        write_atomic(self.paths.registry_file, json.dumps(registry, indent=2) + "\n", mode=0o600)
        if changed and self.reload is not None:
            self.reload()


# --- the broker ---------------------------------------------------------------------------


def signal_reload(pid_file: Path) -> int:
    """Ask a running Mosquitto to re-read its password and ACL files (SIGHUP). Its pid."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        raise BrokerError(f"cannot read a Mosquitto pid from {pid_file}: {exc}") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise BrokerError(f"cannot signal Mosquitto (pid {pid} from {pid_file}): {exc}") from None
    log.info("Sent SIGHUP to Mosquitto (pid %d)", pid)
    return pid


def clear_retained_discovery(
    broker_url: str,
    credentials: HubCredentials,
    node: str,
    *,
    settle: float = 0.5,
    timeout: float = 10.0,
    broker: BrokerConfig | None = None,
) -> list[str]:
    """Publish empty retained payloads to every `homeassistant/+/<node>/+/config` that has one.

    The topics are learnt by subscribing: the broker sends the retained ones right after the
    SUBACK, and `settle` seconds without a new one ends the wait. QoS 1 publishes, so each
    removal is in the broker before this returns. A one-shot operation with its own short
    paho client; the hub's long-lived connection lives in `hub.bus.mqtt`.
    """
    from paho.mqtt.enums import MQTTProtocolVersion

    from hub.bus.clients import new_client

    parts = urlsplit(broker_url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
        raise BrokerError(f"broker URL {broker_url!r} must look like mqtt://host:1883")
    tls = parts.scheme in ("mqtts", "ssl")
    host, port = parts.hostname, parts.port or (8883 if tls else 1883)
    topic_filter = f"homeassistant/+/{node}/+/config"

    connected = threading.Event()
    subscribed = threading.Event()
    state: dict[str, Any] = {"connect": None, "suback": None, "last": 0.0}
    found: set[str] = set()
    lock = threading.Lock()

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        state["connect"] = reason
        connected.set()

    def on_subscribe(client: Any, userdata: Any, mid: Any, reasons: Any, props: Any) -> None:
        state["suback"] = reasons
        state["last"] = time.monotonic()
        subscribed.set()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        with lock:
            if message.retain and message.payload:
                found.add(message.topic)
            state["last"] = time.monotonic()

    client = new_client(
        f"hub-device-remove-{secrets.token_hex(4)}",
        broker,
        protocol=MQTTProtocolVersion.MQTTv311,
        username=credentials.username,
        password=credentials.password,
        use_tls=tls,
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise BrokerError(f"cannot reach the broker at {host}:{port}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(timeout) or state["connect"] is None:
            raise BrokerError(f"no answer from the broker at {host}:{port} within {timeout:g} s")
        if state["connect"].is_failure:
            raise BrokerError(
                f"the broker refused user {credentials.username!r}: {state['connect']} "
                "(is the hub user in its password file, and has it been reloaded?)"
            )
        client.subscribe(topic_filter, qos=1)
        if not subscribed.wait(timeout):
            raise BrokerError(f"the broker did not confirm the subscription to {topic_filter}")
        if any(code.is_failure for code in state["suback"]):
            raise BrokerError(
                f"the broker refused user {credentials.username!r} reading {topic_filter}"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with lock:
                quiet = time.monotonic() - state["last"]
            if quiet >= settle:
                break
            time.sleep(min(0.05, settle))
        with lock:
            topics = sorted(found)
        infos = [client.publish(topic, b"", qos=1, retain=True) for topic in topics]
        for topic, info in zip(topics, infos, strict=True):
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise BrokerError(f"the broker did not acknowledge clearing {topic}")
        return topics
    finally:
        client.disconnect()
        client.loop_stop()
