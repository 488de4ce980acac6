"""Flashing through the real esptool code against the ROM-loader simulator on a real pty."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.cli.flash import flash as flash_command
from hub.provision.flash import (
    FlashError,
    ImageError,
    NotInDownloadModeError,
    PortNotFoundError,
    PortPermissionError,
    VerifyError,
    WrongChipError,
    flash_image,
    read_image_header,
)
from tests.provision.romsim import RomSimulator

CHIP_IDS = {"esp32": 0, "esp32s3": 9, "esp32c3": 5}


def make_image(chip: str, size: int = 64 * 1024, seed: int = 1) -> bytes:
    """A factory image as ESPHome builds it: ESP32 bootloader at 0x1000, S3/C3 at 0x0."""
    header = struct.pack("<BBBBI", 0xE9, 3, 2, 0x20, 0x40080404)
    header += bytes([0xEE, 0, 0, 0]) + struct.pack("<HBHH", CHIP_IDS[chip], 0, 0, 0xFFFF)
    header += bytes(4) + b"\x00"
    rng = hashlib.sha256(str(seed).encode()).digest()
    body = header + (rng * (size // 64)) + bytes(size // 2)  # half noise, half compressible
    body = body[:size]
    return b"\xff" * 0x1000 + body if chip == "esp32" else body


@pytest.mark.parametrize("chip", ["esp32", "esp32s3", "esp32c3"])
@pytest.mark.parametrize("stub", [True, False], ids=["stub", "rom"])
def test_flash_detects_chip_writes_and_verifies(chip: str, stub: bool) -> None:
    image = make_image(chip, 100_003)  # odd size: esptool pads to 4 bytes with 0xFF
    seen: list[tuple[int, int]] = []
    with RomSimulator(chip) as sim:
        result = flash_image(sim.port, image, stub=stub, progress=lambda d, t: seen.append((d, t)))
        flashed = bytes(sim.flash[: len(image)])
        counters = sim.counters
    assert result.chip == chip
    assert flashed == image
    assert result.md5 == hashlib.md5(image + b"\xff").hexdigest()
    assert result.baud == 460800 and not result.fell_back
    assert counters.commands.get(0x11, 0) > 0  # FLASH_DEFL_DATA: the write went compressed
    assert counters.commands.get(0x0F) == 1  # CHANGE_BAUDRATE
    assert seen and seen[-1][0] == seen[-1][1]  # progress reached 100 %


def test_flash_over_socket_url() -> None:
    image = make_image("esp32s3", 20_000)
    with RomSimulator("esp32s3", transport="socket") as sim:
        result = flash_image(sim.port, image)
        assert bytes(sim.flash[: len(image)]) == image
    assert result.chip == "esp32s3"


def test_flash_at_app_offset() -> None:
    app = make_image("esp32c3", 30_000)
    with RomSimulator("esp32c3") as sim:
        flash_image(sim.port, app, address=0x10000)
        assert bytes(sim.flash[0x10000 : 0x10000 + len(app)]) == app
        assert sim.flash[:0x10000].count(0xFF) == 0x10000


def test_corrupted_write_is_caught_by_verify() -> None:
    image = make_image("esp32", 50_000)
    with RomSimulator("esp32", corrupt_at=0x1234) as sim:
        with pytest.raises(VerifyError) as caught:
            flash_image(sim.port, image)
        in_flash = hashlib.md5(bytes(sim.flash[: len(image)])).hexdigest()
    assert caught.value.expected_md5 == hashlib.md5(image).hexdigest()
    assert caught.value.actual_md5 == in_flash != caught.value.expected_md5


def test_esp32s3_image_refused_for_esp32() -> None:
    with RomSimulator("esp32") as sim:
        with pytest.raises(WrongChipError, match=r"image is for ESP32-S3.*board is an ESP32"):
            flash_image(sim.port, make_image("esp32s3"))
        assert sim.flash.count(0xFF) == len(sim.flash)  # nothing written
        assert 0x02 not in sim.counters.commands and 0x10 not in sim.counters.commands


def test_esp32_app_image_refused_at_zero() -> None:
    app_only = make_image("esp32")[0x1000:]
    with RomSimulator("esp32") as sim, pytest.raises(ImageError, match="0x1000"):
        flash_image(sim.port, app_only)


def test_expected_chip_mismatch() -> None:
    with (
        RomSimulator("esp32c3") as sim,
        pytest.raises(WrongChipError, match="configured as ESP32-S3"),
    ):
        flash_image(sim.port, make_image("esp32c3"), expected_chip="esp32s3")


def test_falls_back_to_115200_when_fast_rate_fails() -> None:
    image = make_image("esp32", 20_000)
    with RomSimulator("esp32", max_baud=115200) as sim:
        result = flash_image(sim.port, image)
        assert bytes(sim.flash[: len(image)]) == image
        assert sim.counters.garbled_bytes > 0
    assert result.fell_back and result.baud == 115200


def test_not_in_download_mode_says_hold_boot() -> None:
    with (
        RomSimulator("esp32", download_mode=False) as sim,
        pytest.raises(NotInDownloadModeError) as caught,
    ):
        flash_image(sim.port, make_image("esp32"), connect_attempts=1)
    assert "hold the BOOT" in str(caught.value)


def test_missing_port() -> None:
    with pytest.raises(PortNotFoundError, match="/dev/ttyUSB-nope does not exist"):
        flash_image("/dev/ttyUSB-nope", make_image("esp32"))


def test_permission_denied(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can open any port; permission errors cannot happen")
    master, slave = os.openpty()
    path = os.ttyname(slave)
    try:
        os.chmod(path, 0)
        with pytest.raises(PortPermissionError, match="dialout"):
            flash_image(path, make_image("esp32"))
    finally:
        os.close(master)
        os.close(slave)


def test_not_an_image() -> None:
    with pytest.raises(ImageError):
        read_image_header(b"hello world" * 100)
    with pytest.raises(ImageError, match="empty"):
        flash_image("/dev/null", b"")


def test_image_header_vectors() -> None:
    esp32 = read_image_header(make_image("esp32"))
    s3 = read_image_header(make_image("esp32s3"))
    assert (esp32.offset, esp32.chip, esp32.segments) == (0x1000, "esp32", 3)
    assert (s3.offset, s3.chip, s3.chip_name) == (0, "esp32s3", "ESP32-S3")


# --- through the CLI -----------------------------------------------------------------------

APP_LOG = [
    "\x1b[0;32m[I][app:100]: ESPHome version 2024.6.1 compiled on Jun 20 2024, 10:00:00\x1b[0m",
    "\x1b[0;33m[W][wifi:999]: connecting with password s3cr3t-pass (a careless log)\x1b[0m",
    "[C][wifi:427]:   IP Address: 192.168.1.42",
    "\x1b[0;32m[I][wifi:617]: WiFi Connected!\x1b[0m",
    "\x1b[0;32m[I][mqtt:274]: MQTT Connected!\x1b[0m",
]


def test_cli_flash_provision_and_follow(tmp_path: Path) -> None:
    image_path = tmp_path / "node.factory.bin"
    image = make_image("esp32s3", 40_000)
    image_path.write_bytes(image)
    with RomSimulator("esp32s3", boot_app_after_flash=True, app_log=APP_LOG, improv=True) as sim:
        result = CliRunner().invoke(
            flash_command,
            [
                "kitchen-air",
                "--port", sim.port,
                "--image", str(image_path),
                "--wifi-ssid", "HomeLab",
                "--data-dir", str(tmp_path / "data"),
                "--log-timeout", "20s",
            ],
            env={"HUB_WIFI_PASSWORD": "s3cr3t-pass"},
        )  # fmt: skip
        flashed = bytes(sim.flash[: len(image)])
        credentials = sim.improv.credentials if sim.improv else None
    assert result.exit_code == 0, result.output
    assert flashed == image
    assert credentials == ("HomeLab", "s3cr3t-pass")
    assert "Flashed and verified" in result.output
    assert "kitchen-air is online at 192.168.1.42" in result.output
    assert "s3cr3t-pass" not in result.output  # masked even where the device logged it
    record = json.loads((tmp_path / "data" / "adopted.json").read_text())
    entry = record["devices"]["kitchen-air"]
    assert entry["flash"]["md5"] == hashlib.md5(image).hexdigest()
    assert entry["flash"]["chip"] == "esp32s3" and entry["wifi_ssid"] == "HomeLab"
    assert "s3cr3t-pass" not in json.dumps(record)


def test_cli_flash_uses_recorded_build_and_reports_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    data_dir = str(tmp_path / "data")
    missing = runner.invoke(flash_command, ["n1", "--port", "/dev/ttyX", "--data-dir", data_dir])
    assert missing.exit_code == 1 and "hub firmware build n1" in missing.output
    image_path = tmp_path / "n1.bin"
    image_path.write_bytes(make_image("esp32"))
    no_port = runner.invoke(
        flash_command,
        ["n1", "--port", "/dev/ttyUSB-nope", "--image", str(image_path), "--data-dir", data_dir],
    )
    assert no_port.exit_code == 1 and "does not exist" in no_port.output
    with RomSimulator("esp32") as sim:
        wrong = runner.invoke(
            flash_command,
            ["n1", "--port", sim.port, "--image", str(image_path), "--no-follow",
             "--data-dir", data_dir, "--address", "0x10000"],
        )  # fmt: skip
        s3_image = tmp_path / "s3.bin"
        s3_image.write_bytes(make_image("esp32s3"))
        refused = runner.invoke(
            flash_command,
            ["n1", "--port", sim.port, "--image", str(s3_image), "--data-dir", data_dir],
        )
    assert wrong.exit_code == 0, wrong.output  # --address: an ESP32 factory image as raw data
    assert refused.exit_code == 1 and "ESP32-S3" in refused.output


def test_flash_error_carries_hint() -> None:
    error = NotInDownloadModeError("no answer")
    assert isinstance(error, FlashError) and "Hint:" in str(error)


def test_esptool_errors_translate_to_hints() -> None:
    from esptool.util import FatalError

    from hub.provision.flash import PortBusyError, _connect_error

    def opened(errno_text: str) -> FlashError:
        return _connect_error(
            "/dev/ttyUSB0",
            FatalError(
                f"Could not open /dev/ttyUSB0, the port is busy or doesn't exist.\n({errno_text})"
            ),
        )

    assert isinstance(opened("[Errno 13] Permission denied: '/dev/ttyUSB0'"), PortPermissionError)
    assert isinstance(opened("[Errno 2] No such file or directory"), PortNotFoundError)
    assert isinstance(opened("Could not exclusively lock port /dev/ttyUSB0"), PortBusyError)
    booted = _connect_error(
        "/dev/ttyUSB0",
        FatalError("Failed to connect to ESP32: Wrong boot mode detected (0x13)! The chip needs "
                   "to be in download mode."),
    )  # fmt: skip
    assert isinstance(booted, NotInDownloadModeError) and "0x13" in str(booted)
