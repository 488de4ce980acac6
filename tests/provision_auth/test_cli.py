"""`hub device` end to end: real files, a real Mosquitto reloaded through its pid file."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hub.cli.device import device
from hub.provision.secrets import HubCredentials, SecretsFile
from tests.provision_auth.peers import Peer
from tests.support.mosquitto import Mosquitto, free_port, mosquitto_binary

pytestmark = pytest.mark.mosquitto

REPO = Path(__file__).resolve().parents[2]


class Cli:
    def __init__(self, tmp_path: Path, pid_file: Path | None) -> None:
        self.data_dir = tmp_path / "hub-data"
        self.pid_file = pid_file
        self.runner = CliRunner()
        self.outputs: list[str] = []

    def __call__(self, *args: str, ok: bool = True) -> Result:
        extra = ["--data-dir", str(self.data_dir)]
        if self.pid_file is not None:
            extra += ["--mosquitto-pid-file", str(self.pid_file)]
        result = self.runner.invoke(device, [*args, *extra], catch_exceptions=False)
        self.outputs.append(result.output)
        assert (result.exit_code == 0) == ok, result.output
        return result

    def secrets(self) -> list[str]:
        entries = SecretsFile(self.data_dir / "secrets.yaml").load()
        hub = HubCredentials.load(self.data_dir / "hub-mqtt.yaml")
        assert hub is not None
        return [v for k, v in entries.items() if "username" not in k] + [hub.password]


def broker_for(data_dir: Path, workdir: Path, pid_file: Path) -> Mosquitto:
    return Mosquitto(
        workdir,
        extra_config=(
            f"password_file {data_dir / 'mosquitto' / 'passwd'}\n"
            f"acl_file {data_dir / 'mosquitto' / 'acl'}\n"
            f"pid_file {pid_file}\nmax_queued_messages 1000"
        ),
    )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Cli, Mosquitto]]:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    pid_file = tmp_path / "mosquitto.pid"
    cli = Cli(tmp_path, None)
    cli("add", "airq-a", "--kind", "airq")  # before the broker: it needs the files to start
    broker = broker_for(cli.data_dir, tmp_path / "broker", pid_file)
    broker.start()
    cli.pid_file = pid_file
    try:
        yield cli, broker
    finally:
        broker.stop()


def password(cli: Cli, name: str) -> str:
    found = SecretsFile(cli.data_dir / "secrets.yaml").device(name)
    assert found is not None
    return found.mqtt_password


def login(broker: Mosquitto, cli: Cli, name: str, secret: str | None = None) -> bool:
    secret = password(cli, name) if secret is None else secret
    peer = Peer(broker.host, broker.port, name, secret, f"{name}-{time.monotonic_ns()}")
    try:
        return peer.connect()
    finally:
        peer.close()


def eventually(predicate: object, what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_full_cycle_with_reload_and_no_secret_anywhere(
    setup: tuple[Cli, Mosquitto], caplog: pytest.LogCaptureFixture
) -> None:
    cli, broker = setup
    caplog.set_level(logging.DEBUG)
    assert login(broker, cli, "airq-a")
    out = cli("add", "buggy", "--kind", "rc-bridge").output
    assert "Signalled Mosquitto (pid" in out
    assert "!secret buggy_api_key" in out and "!secret buggy_mqtt_password" in out
    assert "node_name: buggy" in out
    eventually(lambda: login(broker, cli, "buggy"), "buggy to be let in")

    listing = cli("list").output
    assert re.search(r"^airq-a\s+airq\s+airq-a\s", listing, re.M)
    assert re.search(r"^buggy\s+rc-bridge\s+buggy\s", listing, re.M)
    rows = json.loads(cli("list", "--json").output)
    assert [(r["name"], r["kind"]) for r in rows] == [("airq-a", "airq"), ("buggy", "rc-bridge")]

    old_secrets = cli.secrets()
    cli("rotate", "buggy", "--only", "mqtt")
    cli("rotate", "hub")
    all_secrets = old_secrets + cli.secrets()

    removed = password(cli, "airq-a")
    out = cli("remove", "airq-a", "--broker", broker.url, "--settle", "0.2").output
    assert "Cleared 0 retained discovery topic(s)" in out
    eventually(lambda: not login(broker, cli, "airq-a", removed), "airq-a to be refused")
    assert login(broker, cli, "buggy")

    text = "\n".join(cli.outputs) + caplog.text
    for value in all_secrets:
        assert value not in text
    assert "Added device buggy" in caplog.text


def test_errors_are_clear_and_change_nothing(setup: tuple[Cli, Mosquitto]) -> None:
    cli, _ = setup
    before = (cli.data_dir / "mosquitto" / "passwd").read_text()
    assert "reserved" in cli("add", "hub", ok=False).output
    assert "already exists" in cli("add", "airq-a", ok=False).output
    assert "no device named 'ghost'" in cli("remove", "ghost", ok=False).output
    assert "no device named 'ghost'" in cli("rotate", "ghost", ok=False).output
    assert (cli.data_dir / "mosquitto" / "passwd").read_text() == before


def test_without_pid_file_it_says_to_reload(tmp_path: Path) -> None:
    cli = Cli(tmp_path, None)
    out = cli("add", "airq-a").output
    assert "reload Mosquitto to apply" in out
    cli.pid_file = tmp_path / "missing.pid"
    result = cli("add", "airq-b", ok=False)
    assert "broker files updated" in result.output and "missing.pid" in result.output
    assert "airq-b" in cli("list").output  # the change itself was made


def test_remove_with_unreachable_broker_still_revokes(tmp_path: Path) -> None:
    cli = Cli(tmp_path, None)
    cli("add", "airq-a")
    result = cli("remove", "airq-a", "--broker", f"mqtt://127.0.0.1:{free_port()}", ok=False)
    assert "cannot reach the broker" in result.output
    assert "airq-a" not in (cli.data_dir / "mosquitto" / "passwd").read_text()


def test_deploy_config_is_accepted_by_mosquitto(tmp_path: Path) -> None:
    """deploy/mosquitto/mosquitto.conf, with its paths moved into tmp, starts and enforces logins."""
    cli = Cli(tmp_path, None)
    cli("add", "airq-a")
    port = free_port()
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    conf = (
        conf.replace("/etc/mosquitto/hub/", f"{cli.data_dir}/mosquitto/")
        .replace("/var/lib/mosquitto/", f"{tmp_path}/")
        .replace("/run/mosquitto/", f"{tmp_path}/")
        .replace("listener 1883", f"listener {port} 127.0.0.1")
        .replace("listener 1884 127.0.0.1", f"listener {free_port()} 127.0.0.1")
        .replace("log_dest syslog", "log_dest stdout")
    )
    assert "allow_anonymous false" in conf and "#listener 8883" in conf
    (tmp_path / "m.conf").write_text(conf + "user root\n")
    binary = mosquitto_binary()
    assert binary is not None
    log = (tmp_path / "m.log").open("wb")
    proc = subprocess.Popen([binary, "-c", str(tmp_path / "m.conf")], stdout=log, stderr=log)
    try:
        broker = Mosquitto.__new__(Mosquitto)
        broker.host, broker.port = "127.0.0.1", port

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "m.log").read_text()
            try:
                return login(broker, cli, "airq-a")
            except OSError:
                return False

        eventually(up, "the deploy config broker")
        assert (tmp_path / "mosquitto.pid").read_text().strip() == str(proc.pid)
        anonymous = Peer("127.0.0.1", port, "", "", "anon")
        anonymous.client.username_pw_set(None)
        assert not anonymous.connect()
        anonymous.close()
    finally:
        proc.terminate()
        proc.wait(5)
        log.close()
