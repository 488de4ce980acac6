"""`hub firmware upload`: over-the-air updates through `esphome upload`. ESPHome and an ESP32
are not here, so the tests run a stand-in `esphome` script that behaves like it on the command
line and prints what espota2 prints (the subprocess, output, timeout and file handling are
real); the failure classification is checked against captured ESPHome error lines."""

from __future__ import annotations

import json
import os
import shlex
import textwrap
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.cli.flash import firmware
from hub.provision.adoption import AdoptionStore
from hub.provision.firmware_build import EsphomeMissingError
from hub.provision.ota import (
    MASK,
    NodeAuthError,
    NodeUnreachableError,
    NoSuchNodeError,
    UploadError,
    classify_failure,
    default_host,
    redact,
    upload_firmware,
)

API_KEY = "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seS0wMTIzNDU="
OTA_PASSWORD = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
WIFI_PASSWORD = "wifi-pass-9876"


def _node(tmp_path: Path, name: str = "airq-test", *, with_secrets: bool = True) -> Path:
    config = tmp_path / "fw" / f"{name}.yaml"
    config.parent.mkdir()
    prefix = name.replace("-", "_")
    config.write_text(
        f"substitutions:\n  node_name: {name}\n  api_key: !secret {prefix}_api_key\n"
        f"  mqtt_password: !secret {prefix}_mqtt_password\n"
        "packages:\n  base: !include packages/base.yaml\n"
    )
    if with_secrets:
        (config.parent / "secrets.yaml").write_text(
            f'wifi_ssid: "HomeLab"\nwifi_password: "{WIFI_PASSWORD}"\n'
            "# BEGIN hub-managed entries: written by `hub device`; put your own entries above\n"
            f'{prefix}_api_key: "{API_KEY}"\n'
            f'{prefix}_mqtt_password: "abcdefabcdef"\n'
            f'{prefix}_mqtt_username: "{name}"\n'
            f'{prefix}_ota_password: "{OTA_PASSWORD}"\n'
            "# END hub-managed entries\n"
        )
    return config


def _fake_esphome(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "esphome"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return [str(script)]


# A run that checks its arguments like ESPHome's argparse would, reads the secret the way
# `!secret` does (from secrets.yaml in its working directory), echoes it in a debug line
# (the hub must mask it), draws espota2's progress bar with carriage returns, and succeeds.
SUCCESS = """\
printf '%s\\n' "$@" > "$(dirname "$0")/args"
pwd > "$(dirname "$0")/cwd"
[ "$1" = upload ] && [ -f "$2" ] && [ "$3" = --device ] || { echo "usage: esphome" >&2; exit 2; }
key=$(sed -n 's/^airq_test_api_key: "\\(.*\\)"$/\\1/p' secrets.yaml)
[ -n "$key" ] || { echo "ERROR Secret 'airq_test_api_key' not defined"; exit 2; }
echo "INFO ESPHome 2026.10.0"
echo "DEBUG Using encryption key $key"
echo "INFO Connecting to 192.168.1.50 port 3232..."
echo "INFO Connected to 192.168.1.50"
echo "INFO Uploading firmware.ota.bin (912384 bytes)"
printf 'Uploading: [=====                         ] 17%%\\rUploading: [==============================] 100%%\\r\\n'
echo "INFO Upload took 7.41 seconds, waiting for result..."
echo "INFO OTA successful"
echo "INFO Successfully uploaded program."
"""


def test_upload_passes_config_device_and_masks_secrets(tmp_path: Path) -> None:
    config = _node(tmp_path)
    esphome = _fake_esphome(tmp_path, SUCCESS)
    lines: list[str] = []
    progress: list[int] = []
    result = upload_firmware(
        "airq-test", config, esphome=esphome, on_line=lines.append, on_progress=progress.append
    )
    args = (tmp_path / "args").read_text().splitlines()
    assert args == ["upload", str(config.resolve()), "--device", "airq-test.local"]
    assert (tmp_path / "cwd").read_text().strip() == str(config.parent.resolve())
    assert result.device == "airq-test.local" and result.image is None
    assert progress == [17, 100]
    assert lines[-1] == "INFO Successfully uploaded program."
    assert f"DEBUG Using encryption key {MASK}" in lines
    assert not any(API_KEY in line for line in lines)
    record = result.record(12.0)
    assert record.device == "airq-test.local" and record.config == str(config.resolve())


def test_upload_with_device_and_image(tmp_path: Path) -> None:
    config = _node(tmp_path)
    image = tmp_path / "firmware.ota.bin"
    image.write_bytes(b"\xe9" + bytes(63))
    esphome = _fake_esphome(tmp_path, SUCCESS)
    result = upload_firmware(
        "airq-test", config, device="192.168.1.50", image=image, esphome=esphome
    )
    args = (tmp_path / "args").read_text().splitlines()
    assert args[2:] == ["--device", "192.168.1.50", "--file", str(image.resolve())]
    assert result.device == "192.168.1.50" and result.image == image.resolve()


def test_factory_image_is_refused_before_esphome_runs(tmp_path: Path) -> None:
    config = _node(tmp_path)
    image = tmp_path / "firmware.factory.bin"
    image.write_bytes(bytes(64))
    esphome = _fake_esphome(tmp_path, SUCCESS)
    with pytest.raises(UploadError, match="factory image"):
        upload_firmware("airq-test", config, image=image, esphome=esphome)
    assert not (tmp_path / "args").exists()


def test_no_config(tmp_path: Path) -> None:
    with pytest.raises(NoSuchNodeError, match="No firmware config for ghost"):
        upload_firmware("ghost", tmp_path / "ghost.yaml", esphome=["/bin/false"])


def test_no_secrets_file_next_to_the_config(tmp_path: Path) -> None:
    config = _node(tmp_path, with_secrets=False)
    with pytest.raises(NoSuchNodeError, match="does not exist") as caught:
        upload_firmware("airq-test", config, esphome=["/bin/false"])
    assert "hub device add airq-test" in str(caught.value)


def test_node_missing_from_secrets_file(tmp_path: Path) -> None:
    config = _node(tmp_path)
    (config.parent / "secrets.yaml").write_text('wifi_ssid: "HomeLab"\n')
    with pytest.raises(NoSuchNodeError, match="no airq_test_api_key, airq_test_mqtt_password"):
        upload_firmware("airq-test", config, esphome=["/bin/false"])


def test_esphome_missing(tmp_path: Path) -> None:
    config = _node(tmp_path)
    with pytest.raises(EsphomeMissingError, match="Could not run"):
        upload_firmware("airq-test", config, esphome=[str(tmp_path / "no-esphome")])


@pytest.mark.parametrize(
    ("output", "kind"),
    [
        (  # mDNS name not found
            "ERROR Error resolving IP address of airq-test.local. Is it connected to WiFi?\n"
            "ERROR (If you know the IP, try --device <IP>)",
            NodeUnreachableError,
        ),
        (
            "INFO Connecting to 192.168.1.50 port 3232...\n"
            "ERROR Connecting to 192.168.1.50 port 3232 failed: timed out\n"
            "ERROR Connection failed.",
            NodeUnreachableError,
        ),
        (
            "ERROR Connecting to 192.168.1.50 port 3232 failed: [Errno 111] Connection refused",
            NodeUnreachableError,
        ),
        (
            "INFO Connected to 192.168.1.50\n"
            "ERROR Error auth result: Error: Authentication invalid. Is the password correct?",
            NodeAuthError,
        ),
        ("ERROR ESP requests password, but no password given!", NodeAuthError),
        (
            "ERROR Error binary size: Error: The OTA partition on the ESP is too small.",
            UploadError,
        ),
    ],
)
def test_failures_are_classified(output: str, kind: type[UploadError]) -> None:
    assert classify_failure(output) is kind


def test_redact_masks_longest_first_and_keeps_short_values() -> None:
    assert redact("key=abcdefgh1234 and abcdefgh", ["abcdefgh", "abcdefgh1234"]) == (
        f"key={MASK} and {MASK}"
    )
    assert redact("port 1883", ["1883"]) == "port 1883"


def _failing(tmp_path: Path, *lines: str) -> list[str]:
    echo = "".join(f"echo {shlex.quote(line)}\n" for line in lines)
    return _fake_esphome(tmp_path, echo + "exit 1\n")


def test_unreachable_node(tmp_path: Path) -> None:
    config = _node(tmp_path)
    esphome = _failing(
        tmp_path,
        "INFO Connecting to 192.168.1.50 port 3232...",
        "ERROR Connecting to 192.168.1.50 port 3232 failed: timed out",
        "ERROR Connection failed.",
    )
    with pytest.raises(NodeUnreachableError) as caught:
        upload_firmware("airq-test", config, esphome=esphome)
    message = str(caught.value)
    assert "airq-test.local failed: the node did not answer" in message
    assert "Is it on the network? Try --device IP" in message
    assert "timed out" in caught.value.output_tail


def test_key_mismatch(tmp_path: Path) -> None:
    config = _node(tmp_path)
    esphome = _failing(
        tmp_path,
        "INFO Connected to 192.168.1.50",
        f"DEBUG Auth: SHA256 password {OTA_PASSWORD}",
        "ERROR Error auth result: Error: Authentication invalid. Is the password correct?",
    )
    with pytest.raises(NodeAuthError) as caught:
        upload_firmware("airq-test", config, device="192.168.1.50", esphome=esphome)
    message = str(caught.value)
    assert "the node refused the key" in message
    assert "was it rotated" in message
    assert "Flash it over serial" in message
    assert OTA_PASSWORD not in caught.value.output_tail and MASK in caught.value.output_tail


def test_other_failure_keeps_esphome_exit_code(tmp_path: Path) -> None:
    config = _node(tmp_path)
    esphome = _failing(tmp_path, "ERROR Error binary size: Error: Couldn't prepare flash memory")
    with pytest.raises(UploadError, match="esphome exited with 1") as caught:
        upload_firmware("airq-test", config, esphome=esphome)
    assert type(caught.value) is UploadError


def test_silent_node_times_out(tmp_path: Path) -> None:
    config = _node(tmp_path)
    # The background `sleep` holds the output pipe open: only a kill of the whole process
    # group ends the read, as with an ESPHome that waits on a node that stopped answering.
    esphome = _fake_esphome(
        tmp_path, 'echo "INFO Connecting to 192.168.1.50 port 3232..."\nsleep 120 & wait\n'
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            upload_firmware("airq-test", config, esphome=esphome, timeout=0.5)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)  # a liveness bound, not a measurement: a leaked `sleep` would take 120 s
    assert not worker.is_alive(), "the upload did not stop at its timeout"
    assert len(errors) == 1 and isinstance(errors[0], NodeUnreachableError)
    assert "took longer than" in str(errors[0])


def test_default_host() -> None:
    assert default_host("airq-kitchen") == "airq-kitchen.local"


# --- the command --------------------------------------------------------------------------


def _invoke(tmp_path: Path, esphome: list[str], *args: str) -> tuple[int, str]:
    config = tmp_path / "fw" / "airq-test.yaml"
    runner = CliRunner()
    env = {"HUB_ESPHOME": esphome[0], "PATH": os.environ.get("PATH", "")}
    result = runner.invoke(
        firmware,
        [
            "upload",
            "airq-test",
            "--firmware-config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            *args,
        ],
        env=env,
    )
    return result.exit_code, result.output


def test_cli_upload_records_it(tmp_path: Path) -> None:
    _node(tmp_path)
    code, output = _invoke(tmp_path, _fake_esphome(tmp_path, SUCCESS), "--device", "10.0.0.7")
    assert code == 0, output
    assert "Updated airq-test" in output and "at 10.0.0.7" in output
    assert "Uploading: 100%" in output and API_KEY not in output
    record = AdoptionStore(tmp_path / "data").get("airq-test")
    assert record is not None and record.upload is not None
    assert record.upload.device == "10.0.0.7" and record.upload.image is None
    saved = json.loads((tmp_path / "data" / "adopted.json").read_text())
    assert saved["devices"]["airq-test"]["upload"]["device"] == "10.0.0.7"


def test_cli_failure_shows_the_hint_and_records_nothing(tmp_path: Path) -> None:
    _node(tmp_path)
    esphome = _failing(
        tmp_path, "ERROR Error resolving IP address of airq-test.local. Is it connected to WiFi?"
    )
    code, output = _invoke(tmp_path, esphome)
    assert code == 1
    assert "Is it on the network? Try --device IP" in output
    assert "Error resolving IP address" in output  # ESPHome's own line, streamed
    assert not (tmp_path / "data" / "adopted.json").exists()
