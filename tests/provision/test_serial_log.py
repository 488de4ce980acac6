"""ESPHome log lines: parsing vectors, the connection watch, and following a real pty."""

from __future__ import annotations

import os
import threading
import time

import pytest

from hub.provision.serial_log import (
    ConnectionWatch,
    LogLine,
    LogTimeoutError,
    follow_log,
    parse_line,
    redact,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[I][wifi:617]: WiFi Connected!", LogLine("I", "wifi", "WiFi Connected!")),
        ("\x1b[0;32m[I][mqtt:274]: MQTT Connected!\x1b[0m", LogLine("I", "mqtt", "MQTT Connected!")),
        ("[12:34:56][C][wifi:427]:   IP Address: 10.0.0.7", LogLine("C", "wifi", "IP Address: 10.0.0.7")),
        ("[12:34:56.789][D][sensor:094]: 'PM2.5': Sending state 4.0", LogLine("D", "sensor", "'PM2.5': Sending state 4.0")),
        ("[VV][api.service:37]: x", LogLine("VV", "api.service", "x")),
        ("rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)", None),
        ("[Q][wifi:1]: not a level", None),
        ("", None),
    ],
)  # fmt: skip
def test_parse_line(text: str, expected: LogLine | None) -> None:
    assert parse_line(text) == expected


def _watch(*lines: str) -> ConnectionWatch:
    watch = ConnectionWatch()
    for text in lines:
        parsed = parse_line(text)
        assert parsed is not None
        watch.feed(parsed)
    return watch


def test_watch_needs_wifi_and_mqtt_or_api() -> None:
    assert _watch("[I][wifi:617]: WiFi Connected!", "[I][mqtt:274]: MQTT Connected!").done
    api = _watch(
        "[I][wifi:617]: Connected",
        "[I][api.connection:1446]: Home Assistant 2024.6.0 (192.168.1.10): Connected successfully",
    )
    assert api.done and api.api and not api.mqtt
    assert not _watch("[I][wifi:617]: WiFi Connected!").done
    assert not _watch("[I][mqtt:274]: MQTT Connected!").done  # MQTT without Wi-Fi: impossible


def test_watch_ignores_negative_messages() -> None:
    watch = _watch(
        "[W][wifi:650]: WiFi Connection failed!",
        "[W][wifi:700]: Disconnected from 'HomeLab'",
        "[W][mqtt:300]: MQTT Disconnected: TCP disconnected",
        "[E][wifi:710]: Not connected",
        "[I][wifi:580]: WiFi Connecting to 'HomeLab'...",
    )
    assert not watch.wifi and not watch.mqtt
    assert watch.errors == ["[wifi] Not connected"]


def test_redact() -> None:
    assert redact("pass=hunter22 again hunter22", ["hunter22", ""]) == "pass=•••••• again ••••••"


def _writer(master: int, lines: list[bytes], delay: float) -> threading.Thread:
    def run() -> None:
        time.sleep(0.2)  # after pyserial's open-time input flush
        for line in lines:
            os.write(master, line)
            time.sleep(delay)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_follow_log_over_pty() -> None:
    master, slave = os.openpty()
    port = os.ttyname(slave)
    seen: list[str] = []
    lines = [
        b"rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n",
        b"\x1b[0;35m[C][wifi:427]:   IP Address: 192.168.1.42\x1b[0m\r\n",
        b"[D][wifi:1]: using psk hunter22\r\n",
        b"\x1b[0;32m[I][wifi:617]: WiFi Con",  # a line split across reads
        b"nected!\x1b[0m\r\n\x1b[0;32m[I][mqtt:274]: MQTT Connected!\x1b[0m\r\n",
    ]
    writer = _writer(master, lines, 0.05)
    try:
        result = follow_log(port, timeout=10, secrets=["hunter22"], on_line=seen.append)
    finally:
        writer.join()
        os.close(master)
        os.close(slave)
    assert result.wifi and result.mqtt and result.ip == "192.168.1.42"
    assert not any("hunter22" in line for line in seen)
    assert any("••••••" in line for line in seen)


def test_follow_log_times_out_with_what_is_missing() -> None:
    master, slave = os.openpty()
    port = os.ttyname(slave)
    writer = _writer(master, [b"[I][wifi:617]: WiFi Connected!\r\n"], 0)
    try:
        with pytest.raises(LogTimeoutError, match="neither MQTT nor the API") as caught:
            follow_log(port, timeout=1.0)
    finally:
        writer.join()
        os.close(master)
        os.close(slave)
    assert caught.value.last_lines == ["[I][wifi:617]: WiFi Connected!"]
