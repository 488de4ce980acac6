"""Flash an ESP32 node over its serial port with esptool's Python API (`esptool.cmds`).

The recipe is ESPHome's own serial upload (`esphome/__main__.py:upload_using_esptool`): reset
into the ROM loader, detect the chip, upload the flasher stub, switch to a fast baud rate, write
the image compressed, verify it by MD5, hard-reset into the new firmware; if anything fails at
the fast rate, try once more at 115200 baud. Before any byte is written the image header's chip
id is compared with the chip on the wire, so an ESP32-S3 build never lands on an ESP32.

Every failure a user can cause or fix is a typed `FlashError` with a hint; esptool's own chatter
goes to this module's logger at DEBUG, and its progress to the caller's `progress` callback.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from esp_pylib.logger import EspLog, EspLogBase
from esptool import cmds
from esptool.loader import ESPLoader
from esptool.util import FatalError
from serial.serialutil import SerialException

__all__ = [
    "CHIP_NAMES",
    "IMAGE_CHIP_IDS",
    "FlashError",
    "FlashResult",
    "ImageError",
    "ImageHeader",
    "NotInDownloadModeError",
    "PortBusyError",
    "PortNotFoundError",
    "PortPermissionError",
    "TransferError",
    "VerifyError",
    "WrongChipError",
    "check_port",
    "flash_image",
    "read_image_header",
]

logger = logging.getLogger(__name__)

# `chip_id` in the image's extended header (esp_image_format.h, esp_chip_id_t).
IMAGE_CHIP_IDS: dict[int, str] = {
    0x0000: "esp32",
    0x0002: "esp32s2",
    0x0005: "esp32c3",
    0x0009: "esp32s3",
    0x000C: "esp32c2",
    0x000D: "esp32c6",
    0x0010: "esp32h2",
    0x0012: "esp32p4",
    0x0017: "esp32c5",
}
CHIP_NAMES: dict[str, str] = {
    "esp32": "ESP32",
    "esp32s2": "ESP32-S2",
    "esp32s3": "ESP32-S3",
    "esp32c2": "ESP32-C2",
    "esp32c3": "ESP32-C3",
    "esp32c5": "ESP32-C5",
    "esp32c6": "ESP32-C6",
    "esp32h2": "ESP32-H2",
    "esp32p4": "ESP32-P4",
}
IMAGE_MAGIC = 0xE9
ROM_BAUD = 115200
# The ESP32 (classic) bootloader lives at 0x1000, so its factory image starts with 4 KiB of 0xFF.
ESP32_BOOTLOADER_OFFSET = 0x1000
HOLD_BOOT_HINT = (
    "Put the board in download mode: hold the BOOT (IO0) button, press and release RESET (EN), "
    "then release BOOT, and run the command again. Boards without auto-reset circuitry need "
    "this every time; a charge-only USB cable or a missing USB-serial driver looks the same."
)

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) of the transfer as it goes."""


class FlashError(Exception):
    """Base of every flashing failure. `hint` says what the user can do about it."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message}\nHint: {self.hint}" if self.hint else message


class PortNotFoundError(FlashError):
    hint = "Check the cable and the port name (`ls /dev/serial/by-id/`); is the board plugged in?"


class PortPermissionError(FlashError):
    hint = (
        "Add your user to the group that owns the port (usually `dialout`: "
        "`sudo usermod -aG dialout $USER`, then log in again)."
    )


class PortBusyError(FlashError):
    hint = "Close whatever holds the port (a serial monitor, `hub serial`, ModemManager) and retry."


class NotInDownloadModeError(FlashError):
    hint = HOLD_BOOT_HINT


class WrongChipError(FlashError):
    hint = "Build the firmware for the chip on the board (the `esp32:` `variant:` in its config)."


class ImageError(FlashError):
    hint = "Flash the factory image that `hub firmware build` (or `esphome compile`) produced."


class VerifyError(FlashError):
    """The flash does not hold what was sent (MD5 mismatch after the write)."""

    hint = "Retry at a lower baud rate (`--baud 115200`); a repeat failure points at the flash."

    def __init__(self, message: str, expected_md5: str, actual_md5: str) -> None:
        super().__init__(message)
        self.expected_md5 = expected_md5
        self.actual_md5 = actual_md5


class TransferError(FlashError):
    hint = "Use a shorter or better USB cable, avoid USB hubs, and retry at `--baud 115200`."


@dataclass(frozen=True)
class ImageHeader:
    """The first header of an ESP-IDF image, as found in a factory or app image."""

    offset: int  # where in the file the header starts (0x1000 in an ESP32 factory image)
    segments: int
    flash_mode: int
    flash_size_freq: int
    entry: int
    chip_id: int

    @property
    def chip(self) -> str | None:
        return IMAGE_CHIP_IDS.get(self.chip_id)

    @property
    def chip_name(self) -> str:
        chip = self.chip
        return CHIP_NAMES.get(chip, chip) if chip else f"unknown chip (id {self.chip_id})"


def read_image_header(image: bytes) -> ImageHeader:
    """Parse the image header at 0x0, or at 0x1000 behind 0xFF padding (ESP32 factory image).

    Raises `ImageError` when neither place holds a plausible ESP-IDF image header.
    """
    candidates = [0]
    if len(image) > ESP32_BOOTLOADER_OFFSET and image[:ESP32_BOOTLOADER_OFFSET].count(0xFF) == (
        ESP32_BOOTLOADER_OFFSET
    ):
        candidates = [ESP32_BOOTLOADER_OFFSET]
    for offset in candidates:
        head = image[offset : offset + 24]
        if len(head) < 24 or head[0] != IMAGE_MAGIC:
            continue
        _magic, segments, mode, size_freq, entry = struct.unpack_from("<BBBBI", head)
        (chip_id,) = struct.unpack_from("<H", head, 12)
        if not 1 <= segments <= 16 or mode > 5:
            continue
        return ImageHeader(offset, segments, mode, size_freq, entry, chip_id)
    raise ImageError(
        f"Not an ESP32 firmware image ({len(image)} bytes): no image header (0xE9) at 0x0 "
        "or, behind padding, at 0x1000"
    )


def check_image(header: ImageHeader, chip: str, address: int) -> None:
    """Refuse an image built for another chip, or one that would overwrite the wrong place."""
    if header.chip != chip:
        raise WrongChipError(
            f"The image is for {header.chip_name}, but the board is an "
            f"{CHIP_NAMES.get(chip, chip)}; nothing was written"
        )
    if chip == "esp32" and address == 0 and header.offset == 0:
        raise ImageError(
            "This looks like an ESP32 app or bootloader image, not a factory image: flashed at "
            "0x0 it would not boot (the ESP32 bootloader belongs at 0x1000)",
            hint="Pass the factory image, or `--address 0x10000` for an app image.",
        )


def check_port(port: str) -> None:
    """Fail early, with the right hint, on a port path that is missing or not ours to open."""
    if "://" in port:
        return  # socket://, rfc2217:// … are checked by pyserial when opened
    if not os.path.exists(port):
        raise PortNotFoundError(f"Serial port {port} does not exist")
    mode = os.stat(port).st_mode
    if not (stat.S_ISCHR(mode) or stat.S_ISLNK(mode)):
        raise PortNotFoundError(f"{port} is not a serial device")
    if not os.access(port, os.R_OK | os.W_OK):
        raise PortPermissionError(f"Permission denied opening {port}")


@dataclass(frozen=True)
class FlashResult:
    port: str
    chip: str  # "esp32", "esp32s3", ...
    chip_description: str  # what esptool reads from the chip, e.g. "ESP32-D0WD-V3 (revision v3.1)"
    address: int
    size: int
    md5: str
    baud: int
    fell_back: bool  # the fast rate failed and 115200 did the job
    seconds: float  # connect to reset

    @property
    def bytes_per_second(self) -> float:
        return self.size / self.seconds if self.seconds > 0 else 0.0


# --- esptool's output, routed to logging and a progress callback ---------------------------------


class _EsptoolLog(EspLogBase):
    """esptool prints through a global logger; this one forwards to ours and to `progress`."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress

    def print(self, *args: Any, **kwargs: Any) -> None:
        text = " ".join(str(a) for a in args).strip()
        if text:
            logger.debug("esptool: %s", text)

    def err(self, *args: Any, suggestion: str | None = None) -> None:
        logger.debug("esptool error: %s", " ".join(str(a) for a in args))

    def warn(self, *args: Any, suggestion: str | None = None) -> None:
        logger.debug("esptool warning: %s", " ".join(str(a) for a in args))

    def note(self, *args: Any) -> None:
        logger.debug("esptool note: %s", " ".join(str(a) for a in args))

    def hint(self, *args: Any) -> None:
        logger.debug("esptool hint: %s", " ".join(str(a) for a in args))

    def debug(self, *args: Any) -> None:
        logger.debug("esptool: %s", " ".join(str(a) for a in args))

    def set_verbosity(self, mode: int | str) -> None:
        pass

    def progress_bar(
        self,
        cur_iter: int,
        total_iters: int,
        prefix: str = "",
        suffix: str = "",
        bar_length: int = 30,
    ) -> None:
        if self._progress is not None:
            self._progress(cur_iter, total_iters)


@contextlib.contextmanager
def _esptool_output(progress: Progress | None) -> Iterator[None]:
    previous = EspLog.instance
    EspLog.instance = _EsptoolLog(progress)
    try:
        yield
    finally:
        EspLog.instance = previous


# --- esptool's errors, translated --------------------------------------------------------------


def _open_error(port: str, exc: BaseException) -> FlashError:
    text = str(exc)
    if re.search(r"Errno 2\b|No such file|FileNotFoundError|could not open port", text, re.I) and (
        "Permission" not in text
    ):
        return PortNotFoundError(f"Serial port {port} does not exist")
    if re.search(r"Permission denied|Errno 13\b", text, re.I):
        return PortPermissionError(f"Permission denied opening {port}")
    if re.search(r"busy|lock|Errno 16\b|Resource temporarily unavailable", text, re.I):
        return PortBusyError(f"Serial port {port} is in use by another program")
    return TransferError(f"Could not open {port}: {_first_line(text)}")


def _connect_error(port: str, exc: FatalError) -> FlashError:
    text = str(exc)
    if text.startswith("Could not open"):
        return _open_error(port, exc)
    boot = re.search(r"Wrong boot mode detected \((0x[0-9a-fA-F]+)\)", text)
    if boot:
        return NotInDownloadModeError(
            f"The board on {port} booted its firmware (boot mode {boot.group(1)}), "
            "not the ROM download mode"
        )
    if "Failed to connect" in text or "No serial data received" in text:
        return NotInDownloadModeError(
            f"No answer from an ESP32 ROM loader on {port}: the board is not in download mode"
        )
    return TransferError(f"Could not talk to the board on {port}: {_first_line(text)}")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


# --- the flash itself --------------------------------------------------------------------------


def _padded(image: bytes) -> bytes:
    # esptool pads every image to a 4-byte multiple with 0xFF (`pad_to(image, 4)`).
    return image + b"\xff" * (-len(image) % 4)


def _chip_key(esp: ESPLoader) -> str:
    return str(esp.CHIP_NAME).lower().replace("-", "")


def _close(esp: ESPLoader | None) -> None:
    if esp is not None:
        with contextlib.suppress(Exception):
            esp._port.close()


def _attempt(
    port: str,
    image: bytes,
    *,
    address: int,
    baud: int,
    header: ImageHeader | None,
    expected_chip: str | None,
    before: str,
    after: str,
    stub: bool,
    connect_attempts: int,
) -> tuple[str, str, str]:
    """One connect-write-verify-reset cycle. Returns (chip, chip description, md5)."""
    esp: ESPLoader | None = None
    try:
        try:
            esp = cmds.connect_esp(
                port=port,
                chip="auto",
                initial_baud=ROM_BAUD,
                before=before,
                connect_attempts=connect_attempts,
            )
        except FatalError as exc:
            raise _connect_error(port, exc) from exc
        except (SerialException, OSError) as exc:
            raise _open_error(port, exc) from exc
        chip = _chip_key(esp)
        description = str(esp.get_chip_description())
        logger.info("Found %s on %s", description, port)
        if expected_chip is not None and expected_chip != chip:
            raise WrongChipError(
                f"The device is configured as {CHIP_NAMES.get(expected_chip, expected_chip)}, "
                f"but the board on {port} is an {CHIP_NAMES.get(chip, chip)}; nothing was written"
            )
        if header is not None:
            check_image(header, chip, address)
        if stub:
            esp = cmds.run_stub(esp)
        if baud != ROM_BAUD:
            esp.change_baud(baud)
        cmds.attach_flash(esp)
        expected = hashlib.md5(_padded(image)).hexdigest()
        try:
            cmds.write_flash(esp, [(address, image)], flash_size="keep", compress=True)
        except FatalError as exc:
            if "MD5" in str(exc) or "flash region is empty" in str(exc):
                actual = esp.flash_md5sum(address, len(_padded(image)))
                raise VerifyError(
                    f"Verify failed: flash at {address:#x} does not match the image "
                    f"(MD5 {actual}, expected {expected})",
                    expected,
                    actual,
                ) from exc
            raise
        # esptool checked already; this independent read-back is what we report.
        actual = esp.flash_md5sum(address, len(_padded(image)))
        if actual != expected:
            raise VerifyError(
                f"Verify failed: flash at {address:#x} does not match the image "
                f"(MD5 {actual}, expected {expected})",
                expected,
                actual,
            )
        cmds.reset_chip(esp, after)
        return chip, description, actual
    finally:
        _close(esp)


def flash_image(
    port: str,
    image: bytes,
    *,
    address: int = 0x0,
    baud: int = 460800,
    fallback_baud: int = ROM_BAUD,
    expected_chip: str | None = None,
    before: str = "default-reset",
    after: str = "hard-reset",
    stub: bool = True,
    connect_attempts: int = 7,
    force: bool = False,
    progress: Progress | None = None,
) -> FlashResult:
    """Write `image` at `address` on the board at `port`, verify it and reset the board.

    `image` is a factory image (flashed at 0x0) unless `address` says otherwise. With `force`
    the image header is not checked (raw data, unknown images). Raises a `FlashError` subclass.
    """
    if not image:
        raise ImageError("The image is empty")
    header = None if force else read_image_header(image)
    check_port(port)
    rates = [baud] if baud == fallback_baud else [baud, fallback_baud]
    started = time.monotonic()
    for attempt, rate in enumerate(rates):
        try:
            with _esptool_output(progress):
                chip, description, md5 = _attempt(
                    port,
                    image,
                    address=address,
                    baud=rate,
                    header=header,
                    expected_chip=expected_chip,
                    before=before,
                    after=after,
                    stub=stub,
                    connect_attempts=connect_attempts,
                )
        except (FatalError, SerialException, OSError) as exc:
            # A transfer that broke half-way: ESPHome's answer is one more try at 115200.
            if attempt + 1 < len(rates):
                logger.warning(
                    "Flashing %s at %d baud failed (%s); retrying at %d baud",
                    port,
                    rate,
                    _first_line(str(exc)),
                    rates[attempt + 1],
                )
                time.sleep(0.2)  # let the board (and the port) settle after the failed session
                continue
            raise TransferError(
                f"Flashing {port} failed at {rate} baud: {_first_line(str(exc))}"
            ) from exc
        seconds = time.monotonic() - started
        logger.info(
            "Flashed %d bytes to %s on %s at %#x in %.1f s (MD5 %s verified)",
            len(image),
            description,
            port,
            address,
            seconds,
            md5,
        )
        return FlashResult(
            port=port,
            chip=chip,
            chip_description=description,
            address=address,
            size=len(image),
            md5=md5,
            baud=rate,
            fell_back=attempt > 0,
            seconds=seconds,
        )
    raise AssertionError("unreachable: every attempt returns or raises")
