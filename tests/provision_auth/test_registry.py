"""The device registry and the secrets file, without a broker: files kept in step."""

from __future__ import annotations

import base64
import logging
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from hub.provision import mosquitto_auth as auth
from hub.provision.devices import DeviceError, DeviceRegistry, Paths
from hub.provision.managed_files import BEGIN
from hub.provision.secrets import DeviceSecrets, HubCredentials, SecretsFile, new_api_key

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry(tmp_path: Path) -> DeviceRegistry:
    return DeviceRegistry(Paths.under(tmp_path / "hub-data"))


def all_secrets(reg: DeviceRegistry) -> list[str]:
    """Every secret value the registry holds (device secrets and the hub's password)."""
    values = [
        v for k, v in SecretsFile(reg.paths.secrets_file).load().items() if "username" not in k
    ]
    hub = HubCredentials.load(reg.paths.hub_credentials_file)
    assert hub is not None
    return [*values, hub.password]


def test_api_key_is_base64_of_32_bytes() -> None:
    key = new_api_key()
    assert len(base64.b64decode(key, validate=True)) == 32
    assert new_api_key(lambda n: bytes(n)) == base64.b64encode(bytes(32)).decode()


def test_secrets_hidden_from_repr() -> None:
    s = DeviceSecrets("dev", api_key="K" * 44, ota_password="O" * 32, mqtt_password="M" * 32)
    assert "K" * 44 not in repr(s) and "O" * 32 not in repr(s) and "M" * 32 not in repr(s)
    assert "hunter2" not in repr(HubCredentials("hub", "hunter2"))


def test_add_writes_everything_in_step(registry: DeviceRegistry) -> None:
    registry.add("airq-a", "airq")
    registry.add("rc-b", "rc-bridge")
    paths = registry.paths
    entries = SecretsFile(paths.secrets_file).load()
    assert set(entries) == {
        f"{d}_{s}"
        for d in ("airq_a", "rc_b")
        for s in ("api_key", "ota_password", "mqtt_username", "mqtt_password")
    }
    assert len(base64.b64decode(entries["airq_a_api_key"])) == 32
    hashes = auth.parse_passwd(paths.passwd_file.read_text())
    assert set(hashes) == {"hub", "airq-a", "rc-b"}
    assert auth.verify_password(entries["airq_a_mqtt_password"], hashes["airq-a"])
    hub = HubCredentials.load(paths.hub_credentials_file)
    assert hub is not None and auth.verify_password(hub.password, hashes["hub"])
    assert set(auth.parse_acl_users(paths.acl_file.read_text())) == {"hub", "airq-a", "rc-b"}
    assert [(d.name, d.kind) for d in registry.devices()] == [
        ("airq-a", "airq"),
        ("rc-b", "rc-bridge"),
    ]
    # The files ESPHome and people read are private; the whole file is valid YAML.
    for path in (paths.secrets_file, paths.hub_credentials_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(paths.secrets_file.read_text()) == entries
    for path in (paths.passwd_file, paths.acl_file):
        assert not stat.S_IMODE(path.stat().st_mode) & 0o007


def test_user_entries_survive_every_command(registry: DeviceRegistry) -> None:
    paths = registry.paths
    paths.secrets_file.parent.mkdir(parents=True)
    paths.secrets_file.write_text("wifi_ssid: home\nwifi_password: 'hunter2'\n")
    paths.passwd_file.parent.mkdir(parents=True)
    paths.passwd_file.write_text("# a person\nadmin:$7$101$AAAA$BBBB\n")
    paths.acl_file.write_text("user admin\ntopic readwrite #\n")
    registry.add("airq-a", "airq")
    registry.rotate("airq-a")
    registry.add("airq-c", "airq")
    registry.remove("airq-a")
    assert yaml.safe_load(paths.secrets_file.read_text())["wifi_password"] == "hunter2"
    assert auth.parse_passwd(paths.passwd_file.read_text())["admin"] == "$7$101$AAAA$BBBB"
    assert set(auth.parse_passwd(paths.passwd_file.read_text())) == {"admin", "hub", "airq-c"}
    acl = auth.parse_acl_users(paths.acl_file.read_text())
    assert acl["admin"] == (auth.AclRule("readwrite", "#"),) and "airq-a" not in acl
    assert paths.passwd_file.read_text().startswith("# a person\n")


def test_secret_name_clash_with_user_entry_is_refused(registry: DeviceRegistry) -> None:
    registry.paths.data_dir.mkdir()
    registry.paths.secrets_file.write_text("airq_a_api_key: mine\n")
    with pytest.raises(DeviceError, match="airq_a_api_key"):
        registry.add("airq-a", "airq")
    assert registry.paths.secrets_file.read_text() == "airq_a_api_key: mine\n"


def test_names_that_differ_only_by_dash_and_underscore_are_refused(
    registry: DeviceRegistry,
) -> None:
    registry.add("airq-a", "airq")
    with pytest.raises(DeviceError, match="share secret names"):
        registry.add("airq_a", "airq")


def test_rotate_changes_only_what_was_asked(registry: DeviceRegistry) -> None:
    registry.add("airq-a", "airq")
    before = SecretsFile(registry.paths.secrets_file).device("airq-a")
    registry.rotate("airq-a", frozenset({"mqtt"}))
    after = SecretsFile(registry.paths.secrets_file).device("airq-a")
    assert before is not None and after is not None
    assert after.mqtt_password != before.mqtt_password
    assert (after.api_key, after.ota_password) == (before.api_key, before.ota_password)
    registry.rotate("airq-a")
    last = SecretsFile(registry.paths.secrets_file).device("airq-a")
    assert (
        last is not None
        and last.api_key != after.api_key
        and last.ota_password != after.ota_password
    )
    assert registry.get("airq-a").rotated is not None


def test_rotate_the_hub_user(registry: DeviceRegistry) -> None:
    registry.add("airq-a", "airq")
    old = registry.hub_credentials()
    registry.rotate("hub")
    new = registry.hub_credentials()
    assert new.password != old.password
    hashed = auth.parse_passwd(registry.paths.passwd_file.read_text())["hub"]
    assert auth.verify_password(new.password, hashed) and not auth.verify_password(
        old.password, hashed
    )


@pytest.mark.parametrize(
    ("name", "kind", "match"),
    [
        ("hub", "airq", "reserved"),
        ("homeassistant", "airq", "reserved"),
        ("hub-myhost", "airq", "the hub's client ids"),
        ("Kitchen", "airq", "lower-case"),
        ("a/b", "airq", "lower-case"),
        ("+", "airq", "lower-case"),
        ("a b", "airq", "lower-case"),
        ("", "airq", "lower-case"),
        ("ok", "toaster", "kind"),
    ],
)
def test_bad_names_and_kinds_are_refused(
    registry: DeviceRegistry, name: str, kind: str, match: str
) -> None:
    with pytest.raises(DeviceError, match=match):
        registry.add(name, kind)  # type: ignore[arg-type]
    assert not registry.paths.passwd_file.exists()


def test_duplicate_and_unknown_devices(registry: DeviceRegistry) -> None:
    registry.add("airq-a", "airq")
    with pytest.raises(DeviceError, match="already exists"):
        registry.add("airq-a", "rc-bridge")
    for action in (registry.remove, registry.rotate, registry.get):
        with pytest.raises(DeviceError, match="no device named"):
            action("nope")


def test_sync_repairs_a_half_done_change(registry: DeviceRegistry) -> None:
    registry.add("airq-a", "airq")
    registry.add("airq-b", "airq")
    # A crash between the writes leaves a password file out of step with the registry:
    # an entry that should not be there ("ghost"), and airq-a missing.
    registry.paths.passwd_file.write_text(
        auth.passwd_text("", {"airq-b": "whatever", "ghost": "x"})
    )
    registry.sync()
    assert set(auth.parse_passwd(registry.paths.passwd_file.read_text())) == {
        "hub",
        "airq-a",
        "airq-b",
    }


def test_damaged_registry_is_reported(registry: DeviceRegistry) -> None:
    registry.paths.data_dir.mkdir()
    registry.paths.registry_file.write_text("{not json")
    with pytest.raises(DeviceError, match="damaged"):
        registry.devices()


def test_no_secret_in_logs(registry: DeviceRegistry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    registry.add("airq-a", "airq")
    registry.add("rc-b", "rc-bridge")
    registry.rotate("airq-a")
    registry.rotate("hub")
    registry.remove("rc-b")
    registry.sync()
    assert "Added device airq-a" in caplog.text
    for value in all_secrets(registry):
        assert value not in caplog.text


def test_generated_files_are_ignored_by_git(tmp_path: Path) -> None:
    """With the defaults (./hub-data in the repo) no generated file can be committed."""
    registry = DeviceRegistry(Paths.under(tmp_path / "hub-data"))
    registry.add("airq-a", "airq")
    created = [p.relative_to(tmp_path) for p in (tmp_path / "hub-data").rglob("*") if p.is_file()]
    assert len(created) >= 5
    candidates = [str(p) for p in created] + ["firmware/secrets.yaml", "deploy/secrets.yaml"]
    result = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--no-index", "--verbose", *candidates],
        capture_output=True,
        text=True,
        check=False,
    )
    ignored = {line.split("\t")[-1] for line in result.stdout.splitlines()}
    assert ignored == set(candidates), f"not ignored: {set(candidates) - ignored}"


def test_marker_text_is_in_the_files(registry: DeviceRegistry) -> None:
    registry.add("airq-a", "airq")
    for path in (registry.paths.secrets_file, registry.paths.passwd_file, registry.paths.acl_file):
        assert BEGIN in path.read_text()
