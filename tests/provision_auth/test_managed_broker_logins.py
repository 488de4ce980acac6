"""The managed broker's generated config ties client ids to logins too (issue #14)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from hub.bus.broker import render_config
from hub.config import BrokerConfig, ManagedBrokerConfig
from hub.provision.devices import DeviceRegistry, Paths
from hub.provision.secrets import SecretsFile
from tests.provision_auth.test_session_takeover import _port_open, connect
from tests.support.hubproc import wait_for
from tests.support.mosquitto import free_port, mosquitto_binary


def test_a_lan_managed_broker_needs_logins() -> None:
    with pytest.raises(ValueError, match="take its session"):
        ManagedBrokerConfig(bind="0.0.0.0")
    lan = ManagedBrokerConfig(bind="0.0.0.0", password_file=Path("/x/passwd"))
    assert BrokerConfig(managed=lan).host_port_tls == ("127.0.0.1", 1884, False)
    assert BrokerConfig().host_port_tls == ("127.0.0.1", 1883, False)


@pytest.mark.mosquitto
def test_with_logins_a_device_cannot_push_the_hub_off(tmp_path: Path) -> None:
    binary = mosquitto_binary()
    if binary is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    paths = Paths.under(tmp_path / "hub-data")
    registry = DeviceRegistry(paths)
    registry.add("airq-a", "airq")
    hub_login = registry.hub_credentials()
    device_password = SecretsFile(paths.secrets_file).device("airq-a").mqtt_password  # type: ignore[union-attr]
    config = ManagedBrokerConfig(
        port=free_port(), hub_port=free_port(),
        password_file=paths.passwd_file, acl_file=paths.acl_file,
    )  # fmt: skip
    text = render_config(config, tmp_path)
    assert "allow_anonymous false" in text and "use_username_as_clientid true" in text
    (tmp_path / "m.conf").write_text(text)
    with (tmp_path / "m.log").open("wb") as log:
        proc = subprocess.Popen([binary, "-c", str(tmp_path / "m.conf")], stdout=log, stderr=log)
    try:
        wait_for(lambda: _port_open(config.port) and _port_open(config.hub_port), 10, what="up")
        hub, reason = connect(config.hub_port, hub_login.username, hub_login.password, "hub-x")
        assert not reason.is_failure  # type: ignore[attr-defined]
        lost = threading.Event()
        hub.on_disconnect = lambda *args: lost.set()
        for _ in range(3):
            device, reason = connect(config.port, "airq-a", device_password, "hub-x")
            assert not reason.is_failure  # type: ignore[attr-defined]
            device.disconnect()
            device.loop_stop()
        assert not lost.wait(1.0), "the device's login pushed the hub's connection off"
        hub.disconnect()
        hub.loop_stop()
    finally:
        proc.terminate()
        proc.wait(10)
