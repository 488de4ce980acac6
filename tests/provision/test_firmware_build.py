"""The `esphome compile` wrapper. ESPHome itself is not installed here, so the build tests run
a stand-in `esphome` script that behaves like it on the command line (the subprocess, output
and file handling are real); the offline detection is checked against captured error lines."""

from __future__ import annotations

import struct
import textwrap
from pathlib import Path

import pytest

from hub.provision.firmware_build import (
    EsphomeMissingError,
    NeedsInternetError,
    build_firmware,
    find_esphome,
    looks_offline,
)


@pytest.mark.parametrize(
    "line",
    [
        "HTTPClientError: HTTPSConnectionPool(host='api.registry.platformio.org', port=443): "
        "Max retries exceeded with url: /v3/packages",
        "socket.gaierror: [Errno -3] Temporary failure in name resolution",
        "fatal: unable to access 'https://github.com/esphome/esp-idf.git/': Could not resolve host",
    ],
)
def test_offline_outputs(line: str) -> None:
    assert looks_offline(line)


def test_compile_errors_are_not_offline() -> None:
    assert not looks_offline("src/main.cpp:12:3: error: 'foo' was not declared in this scope")


def test_esphome_missing() -> None:
    with pytest.raises(EsphomeMissingError, match="not installed"):
        find_esphome({"PATH": "/nonexistent"})


def _fake_esphome(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "esphome"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return [str(script)]


def test_build_records_the_factory_image(tmp_path: Path) -> None:
    config = tmp_path / "n1.yaml"
    config.write_text("esphome:\n  name: n1\n")
    header = struct.pack("<BBBBI", 0xE9, 3, 2, 0x20, 0) + bytes(4) + struct.pack("<H", 5)
    (tmp_path / "header.bin").write_bytes(header + bytes(16))
    esphome = _fake_esphome(
        tmp_path,
        """\
        [ "$1" = compile ] || exit 2
        out="$(dirname "$2")/.esphome/build/n1/.pioenvs/n1"
        mkdir -p "$out"
        echo "INFO Compiling app..."
        cp "$(dirname "$2")/header.bin" "$out/firmware.factory.bin"
        echo "INFO Successfully compiled program."
        """,
    )
    lines: list[str] = []
    result = build_firmware("n1", config, esphome=esphome, on_line=lines.append)
    assert result.factory_image.name == "firmware.factory.bin"
    assert result.chip == "esp32c3" and result.size == 30
    assert lines[-1] == "INFO Successfully compiled program."
    assert result.record(5.0).factory_image == str(result.factory_image)


def test_first_build_offline_says_it_needs_internet(tmp_path: Path) -> None:
    config = tmp_path / "n1.yaml"
    config.write_text("esphome:\n  name: n1\n")
    esphome = _fake_esphome(
        tmp_path,
        """\
        echo "Platform Manager: Installing platformio/espressif32 @ 53.3.13"
        echo "HTTPClientError: Max retries exceeded with url: /v3/packages (Failed to establish a new connection)"
        exit 1
        """,
    )
    with pytest.raises(NeedsInternetError) as caught:
        build_firmware("n1", config, esphome=esphome)
    assert "needs internet" in str(caught.value) and "HTTPClientError" in caught.value.output_tail
