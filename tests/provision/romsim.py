"""A protocol-level simulator of the ESP32 ROM serial loader, for flashing tests without a board.

It plays the chip side of esptool's serial protocol (docs/en/advanced-topics/serial-protocol.rst,
summarised in specs/esp-flashing.md) well enough for esptool 5.x to detect the chip, change the
baud rate, attach the flash, write it (plain and compressed), verify it by MD5 and reset it:
SLIP framing, SYNC, READ_REG/WRITE_REG over a register map (chip magic, UART divider, eFuses,
and a tiny SPI "user command" model answering RDID, SFDP and RDSR), SPI_ATTACH, SPI_SET_PARAMS,
CHANGE_BAUDRATE, FLASH_BEGIN/DATA/END, FLASH_DEFL_BEGIN/DATA/END (zlib inflate into a simulated
flash `bytearray`), SPI_FLASH_MD5, READ_FLASH_SLOW, GET_SECURITY_INFO (S3/C3), MEM_* and, if
asked, a stand-in for esptool's flasher stub (`OHAI`, 2 status bytes, raw MD5).

The port is a pseudo-terminal (`os.openpty`) or a `socket://` URL. Neither can carry the RTS/DTR
reset lines, so the simulator designs around them:
- Opening the port is "power on": the ROM starts at 115200 baud in download mode (the BOOT button
  is held), or runs the app if `download_mode=False` (then it prints a boot log and ignores SLIP).
- Closing the port is a reset. With `boot_app_after_flash=True` a session that wrote flash ends
  in the app (as esptool's hard reset does on a real board), which prints `app_log` lines.
- On a pty the simulator reads the host's baud rate from the terminal settings; while it differs
  from the simulated UART's rate every byte is lost in both directions (as on a real wire), and
  above `max_baud` the link is dead (an adapter that cannot do the rate).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import select
import socket
import struct
import termios
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from esptool.targets import CHIP_DEFS

SLIP_END, SLIP_ESC, SLIP_ESC_END, SLIP_ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD

# Opcodes (serial-protocol.rst).
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SYNC, WRITE_REG, READ_REG = 0x08, 0x09, 0x0A
SPI_SET_PARAMS, SPI_ATTACH, READ_FLASH_SLOW, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0E, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END = 0x10, 0x11, 0x12
SPI_FLASH_MD5, GET_SECURITY_INFO = 0x13, 0x14
ERASE_FLASH, ERASE_REGION = 0xD0, 0xD1

# ROM error codes.
ERR_INVALID_MESSAGE, ERR_BAD_CHECKSUM, ERR_FLASH_WRITE, ERR_DEFLATE = 0x05, 0x07, 0x08, 0x0B
ERR_STUB_UNIMPLEMENTED = 0xFF

CHECKSUM_SEED = 0xEF
SYNC_PAYLOAD = b"\x07\x07\x12\x20" + 32 * b"\x55"
SYNC_VALUE = 0x20120707  # non-zero, so esptool knows it talks to the ROM and not a stub
CHIP_DETECT_MAGIC_REG = 0x40001000

ChipName = Literal["esp32", "esp32s3", "esp32c3"]


@dataclass(frozen=True)
class ChipSpec:
    """What distinguishes one ROM from another on the wire. Identity values are the chips' own
    (spec §2); register addresses come from esptool's target classes, which mirror the TRMs."""

    name: str
    image_chip_id: int
    magic: int  # value at 0x40001000
    has_security_info: bool  # S3/C3 answer GET_SECURITY_INFO with their chip id
    five_word_begin: bool  # FLASH_BEGIN / FLASH_DEFL_BEGIN carry an "encrypted" word
    spi_base: int
    spi_usr2: int
    spi_w0: int
    uart_clkdiv: int
    extra_registers: tuple[tuple[int, int], ...] = ()


def _chip_spec(name: ChipName) -> ChipSpec:
    rom = CHIP_DEFS[name]
    extra: list[tuple[int, int]] = []
    if name == "esp32":
        # esptool's ESP32 change_baud scales the rate by the ROM-calibrated crystal frequency
        # (RTC cali value * 15625 * CK8M eFuse / 40): 1024 * 15625 * 100 / 40 = 40 MHz exactly.
        extra.append((rom.RTCCALICFG1, 1024 << rom.TIMERS_RTC_CALI_VALUE_S))
        extra.append((rom.EFUSE_RD_REG_BASE + 4 * 4, 100))
    ids = {"esp32": (0, 0x00F01D83), "esp32s3": (9, 0x00000009), "esp32c3": (5, 0x6921506F)}
    chip_id, magic = ids[name]
    return ChipSpec(
        name=name,
        image_chip_id=chip_id,
        magic=magic,
        has_security_info=name != "esp32",
        five_word_begin=name != "esp32",
        spi_base=rom.SPI_REG_BASE,
        spi_usr2=rom.SPI_REG_BASE + rom.SPI_USR2_OFFS,
        spi_w0=rom.SPI_REG_BASE + rom.SPI_W0_OFFS,
        uart_clkdiv=rom.UART_CLKDIV_REG,
        extra_registers=tuple(extra),
    )


def slip_encode(packet: bytes) -> bytes:
    body = packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    return b"\xc0" + body + b"\xc0"


class SlipDecoder:
    """Cuts SLIP frames out of a byte stream; bytes outside frames are ignored (line noise)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_frame = False
        self._escape = False

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        for byte in data:
            if byte == SLIP_END:
                if self._in_frame and self._buf:
                    frames.append(bytes(self._buf))
                    self._buf.clear()
                    self._in_frame = False
                else:
                    self._in_frame = True  # start, or an empty frame between two 0xC0
                self._escape = False
                continue
            if not self._in_frame:
                continue
            if self._escape:
                self._escape = False
                self._buf.append({SLIP_ESC_END: SLIP_END, SLIP_ESC_ESC: SLIP_ESC}.get(byte, byte))
            elif byte == SLIP_ESC:
                self._escape = True
            else:
                self._buf.append(byte)
        return frames


def checksum(data: bytes) -> int:
    state = CHECKSUM_SEED
    for byte in data:
        state ^= byte
    return state


@dataclass
class Counters:
    commands: dict[int, int] = field(default_factory=dict)
    checksum_errors: int = 0
    garbled_bytes: int = 0
    flash_bytes_written: int = 0
    sessions: int = 0


class RomLoader:
    """The protocol engine: one request packet in, the response packets out. No I/O."""

    def __init__(
        self,
        chip: ChipName = "esp32",
        flash_size: int = 4 * 1024 * 1024,
        corrupt_at: int | None = None,
        stub: bool = True,
    ) -> None:
        self.spec = _chip_spec(chip)
        self.flash = bytearray(b"\xff" * flash_size)
        self.corrupt_at = corrupt_at
        self.stub_supported = stub
        self.counters = Counters()
        self.wrote_flash = False
        self.reset()

    def reset(self) -> None:
        """Power-on state: ROM at 115200, registers at their reset values, no transfer open."""
        self.uart_baud = 115200
        self.stub_running = False
        self.registers: dict[int, int] = {
            CHIP_DETECT_MAGIC_REG: self.spec.magic,
            self.spec.uart_clkdiv: 40_000_000 // 115200,
            **dict(self.spec.extra_registers),
        }
        self._write: tuple[int, int, int] | None = None  # (offset, block size, next seq)
        self._inflate: zlib._Decompress | None = None
        self._inflate_at = 0
        self._mem_entry: int | None = None
        self.pending_baud: int | None = None
        self.greeting: bytes | None = None

    # --- framing of answers -----------------------------------------------------------------

    def _status(self, ok: bool, error: int = 0) -> bytes:
        status = bytes([0 if ok else 1, error])
        return status if self.stub_running else status + b"\x00\x00"

    def _reply(self, op: int, value: int = 0, data: bytes = b"", error: int | None = None) -> bytes:
        body = data + self._status(error is None, error or 0)
        return struct.pack("<BBHI", 1, op, len(body), value) + body

    # --- dispatch -----------------------------------------------------------------------------

    def handle(self, packet: bytes) -> list[bytes]:
        if len(packet) < 8 or packet[0] != 0:
            return []  # not a request (or our own echo): the ROM ignores it
        _, op, size, chk = struct.unpack("<BBHI", packet[:8])
        data = packet[8:]
        self.counters.commands[op] = self.counters.commands.get(op, 0) + 1
        if len(data) != size:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        handler = {
            SYNC: self._sync,
            READ_REG: self._read_reg,
            WRITE_REG: self._write_reg,
            GET_SECURITY_INFO: self._security_info,
            SPI_ATTACH: self._spi_attach,
            SPI_SET_PARAMS: self._spi_set_params,
            CHANGE_BAUDRATE: self._change_baud,
            FLASH_BEGIN: self._flash_begin,
            FLASH_DATA: self._flash_data,
            FLASH_END: self._flash_end,
            FLASH_DEFL_BEGIN: self._defl_begin,
            FLASH_DEFL_DATA: self._defl_data,
            FLASH_DEFL_END: self._flash_end,
            SPI_FLASH_MD5: self._md5,
            READ_FLASH_SLOW: self._read_flash_slow,
            MEM_BEGIN: self._mem_begin,
            MEM_DATA: self._mem_data,
            MEM_END: self._mem_end,
            ERASE_FLASH: self._erase_flash,
            ERASE_REGION: self._erase_region,
        }.get(op)
        if handler is None:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        return handler(op, data, chk)

    def _sync(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if data != SYNC_PAYLOAD:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        value = 0 if self.stub_running else SYNC_VALUE
        return [self._reply(op, value)] * (1 if self.stub_running else 8)

    def _read_reg(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if len(data) != 4:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        (addr,) = struct.unpack("<I", data)
        if addr == self.spec.uart_clkdiv:
            return [self._reply(op, 40_000_000 // self.uart_baud)]
        return [self._reply(op, self.registers.get(addr, 0))]

    def _write_reg(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if not data or len(data) % 16:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        for i in range(0, len(data), 16):
            addr, value, mask, _delay = struct.unpack("<IIII", data[i : i + 16])
            old = self.registers.get(addr, 0)
            self.registers[addr] = (old & ~mask) | (value & mask)
            if addr == self.spec.spi_base and value & (1 << 18):
                self._run_spi_user_command()
        return [self._reply(op)]

    def _run_spi_user_command(self) -> None:
        """The SPI peripheral's USR command: opcode in USR2, answer in W0, done clears the bit."""
        command = self.registers.get(self.spec.spi_usr2, 0) & 0xFF
        size_code = {1 << 20: 0x14, 2 << 20: 0x15, 4 << 20: 0x16, 8 << 20: 0x17, 16 << 20: 0x18}
        answers = {
            0x9F: 0xEF | (0x40 << 8) | (size_code.get(len(self.flash), 0x16) << 16),  # RDID Winbond
            0x5A: 0x50444653,  # SFDP signature "SFDP"
            0x05: 0x00,  # RDSR: not busy, not write-protected
            0x35: 0x00,  # RDSR2
        }
        self.registers[self.spec.spi_w0] = answers.get(command, 0)
        self.registers[self.spec.spi_base] = self.registers[self.spec.spi_base] & ~(1 << 18)

    def _security_info(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if not self.spec.has_security_info:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]  # the ESP32 ROM lacks it
        info = struct.pack("<I8BII", 0, 0, *([0] * 7), self.spec.image_chip_id, 0)
        return [self._reply(op, data=info)]

    def _spi_attach(self, op: int, data: bytes, chk: int) -> list[bytes]:
        ok = len(data) == (4 if self.stub_running else 8)  # the ROM takes an extra "legacy" word
        return [self._reply(op, error=None if ok else ERR_INVALID_MESSAGE)]

    def _spi_set_params(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if len(data) != 24:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        return [self._reply(op)]

    def _change_baud(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if len(data) != 8:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        new, _old = struct.unpack("<II", data)
        if new == 0:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        self.pending_baud = new  # applied after the answer has gone out at the old rate
        return [self._reply(op)]

    def _begin_words(self, data: bytes) -> tuple[int, int, int, int] | None:
        words = 5 if (self.spec.five_word_begin or self.stub_running) else 4
        if len(data) != 4 * words:
            return None
        size, blocks, block_size, offset = struct.unpack("<IIII", data[:16])
        return size, blocks, block_size, offset

    def _erase(self, offset: int, size: int) -> bool:
        if offset % 4096 or offset + size > len(self.flash):
            return False
        end = min(len(self.flash), offset + -(-size // 4096) * 4096)
        self.flash[offset:end] = b"\xff" * (end - offset)
        return True

    def _flash_begin(self, op: int, data: bytes, chk: int) -> list[bytes]:
        words = self._begin_words(data)
        if words is None:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        size, _blocks, block_size, offset = words
        if not self._erase(offset, size):
            return [self._reply(op, error=ERR_FLASH_WRITE)]
        self._write = (offset, block_size, 0)
        return [self._reply(op)]

    def _block(self, op: int, data: bytes, chk: int) -> tuple[bytes, int] | bytes:
        """Check a DATA packet's header and checksum; return (payload, seq) or an error reply."""
        if len(data) < 16:
            return self._reply(op, error=ERR_INVALID_MESSAGE)
        length, seq, _, _ = struct.unpack("<IIII", data[:16])
        payload = data[16:]
        if length != len(payload):
            return self._reply(op, error=ERR_INVALID_MESSAGE)
        if checksum(payload) != chk:
            self.counters.checksum_errors += 1
            return self._reply(op, error=ERR_BAD_CHECKSUM)
        return payload, seq

    def _store(self, at: int, payload: bytes) -> bool:
        if at + len(payload) > len(self.flash):
            return False
        self.flash[at : at + len(payload)] = payload
        if self.corrupt_at is not None and at <= self.corrupt_at < at + len(payload):
            self.flash[self.corrupt_at] ^= 0x01  # a bit that did not make it into the cell
        self.counters.flash_bytes_written += len(payload)
        self.wrote_flash = True
        return True

    def _flash_data(self, op: int, data: bytes, chk: int) -> list[bytes]:
        checked = self._block(op, data, chk)
        if isinstance(checked, bytes):
            return [checked]
        payload, seq = checked
        if self._write is None or seq != self._write[2]:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        offset, block_size, _ = self._write
        if not self._store(offset + seq * block_size, payload):
            return [self._reply(op, error=ERR_FLASH_WRITE)]
        self._write = (offset, block_size, seq + 1)
        return [self._reply(op)]

    def _flash_end(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if len(data) != 4:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        self._write = None
        self._inflate = None
        return [self._reply(op)]

    def _defl_begin(self, op: int, data: bytes, chk: int) -> list[bytes]:
        words = self._begin_words(data)
        if words is None:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        size, _blocks, block_size, offset = words
        if not self._erase(offset, size):
            return [self._reply(op, error=ERR_FLASH_WRITE)]
        self._inflate = zlib.decompressobj()
        self._inflate_at = offset
        self._write = (offset, block_size, 0)
        return [self._reply(op)]

    def _defl_data(self, op: int, data: bytes, chk: int) -> list[bytes]:
        checked = self._block(op, data, chk)
        if isinstance(checked, bytes):
            return [checked]
        payload, seq = checked
        if self._inflate is None or self._write is None or seq != self._write[2]:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        try:
            plain = self._inflate.decompress(payload)
        except zlib.error:
            return [self._reply(op, error=ERR_DEFLATE)]
        if not self._store(self._inflate_at, plain):
            return [self._reply(op, error=ERR_FLASH_WRITE)]
        self._inflate_at += len(plain)
        self._write = (self._write[0], self._write[1], seq + 1)
        return [self._reply(op)]

    def _md5(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if len(data) != 16:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        addr, size, _, _ = struct.unpack("<IIII", data)
        if addr + size > len(self.flash):
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        digest = hashlib.md5(self.flash[addr : addr + size])
        # The ROM answers in 32 ASCII hex digits, the stub in 16 raw bytes.
        answer = digest.digest() if self.stub_running else digest.hexdigest().encode()
        return [self._reply(op, data=answer)]

    def _read_flash_slow(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if len(data) != 8:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        offset, length = struct.unpack("<II", data)
        if length > 64 or offset + length > len(self.flash):
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        block = bytes(self.flash[offset : offset + length]).ljust(64, b"\xff")
        return [self._reply(op, data=block)]

    def _mem_begin(self, op: int, data: bytes, chk: int) -> list[bytes]:
        ok = len(data) == 16
        return [self._reply(op, error=None if ok else ERR_INVALID_MESSAGE)]

    def _mem_data(self, op: int, data: bytes, chk: int) -> list[bytes]:
        checked = self._block(op, data, chk)
        return [checked] if isinstance(checked, bytes) else [self._reply(op)]

    def _mem_end(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if len(data) != 8:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        no_entry, entry = struct.unpack("<II", data)
        replies = [self._reply(op)]
        if not no_entry and entry and self.stub_supported:
            # Nothing of the uploaded code runs; the simulator switches to stub behaviour.
            self.stub_running = True
            self.greeting = b"OHAI"
        return replies

    def _erase_flash(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if not self.stub_running:
            return [self._reply(op, error=ERR_INVALID_MESSAGE)]
        self.flash[:] = b"\xff" * len(self.flash)
        return [self._reply(op)]

    def _erase_region(self, op: int, data: bytes, chk: int) -> list[bytes]:
        if not self.stub_running or len(data) != 8:
            return [self._reply(op, error=ERR_STUB_UNIMPLEMENTED)]
        offset, size = struct.unpack("<II", data)
        ok = self._erase(offset, size)
        return [self._reply(op, error=None if ok else ERR_FLASH_WRITE)]


class ImprovResponder:
    """The app side of Improv serial, as ESPHome's `improv_serial` answers (written from its
    improv_serial_component.cpp, independently of hub.provision.improv)."""

    def __init__(self, connects: bool) -> None:
        self.connects = connects
        self.buffer = bytearray()
        self.credentials: tuple[str, str] | None = None
        self.bad_checksums = 0

    @staticmethod
    def _packet(packet_type: int, data: bytes) -> bytes:
        body = b"IMPROV" + bytes([1, packet_type, len(data)]) + data
        return body + bytes([sum(body) & 0xFF]) + b"\n"

    def feed(self, data: bytes) -> Iterator[bytes]:
        self.buffer.extend(data)
        while True:
            start = self.buffer.find(b"IMPROV")
            if start < 0 or len(self.buffer) < start + 9:
                return
            del self.buffer[:start]
            total = 9 + self.buffer[8] + 1
            if len(self.buffer) < total:
                return
            frame = bytes(self.buffer[:total])
            del self.buffer[:total]
            if sum(frame[:-1]) & 0xFF != frame[-1]:
                self.bad_checksums += 1
                yield self._packet(0x02, b"\x01")  # ERROR_INVALID_RPC
                continue
            if frame[7] != 0x03:
                continue
            command, payload = frame[9], frame[11 : 11 + frame[10]]
            if command == 0x02:  # GET_CURRENT_STATE
                yield self._packet(0x01, b"\x02")  # AUTHORIZED
            elif command == 0x01:  # WIFI_SETTINGS
                ssid = payload[1 : 1 + payload[0]]
                rest = payload[1 + payload[0] :]
                password = rest[1 : 1 + rest[0]]
                self.credentials = (ssid.decode(), password.decode())
                yield self._packet(0x01, b"\x03")  # PROVISIONING
                if not self.connects:
                    yield self._packet(0x02, b"\x03")  # ERROR_UNABLE_TO_CONNECT
                    yield self._packet(0x01, b"\x02")
                    continue
                yield self._packet(0x01, b"\x04")  # PROVISIONED
                url = b"http://192.168.1.42"
                result = bytes([len(url)]) + url
                yield self._packet(0x04, bytes([0x01, len(result)]) + result)
            else:
                yield self._packet(0x02, b"\x02")  # ERROR_UNKNOWN_RPC


_BAUD_BY_SPEED = {
    getattr(termios, f"B{rate}"): rate
    for rate in (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1500000, 2000000)
    if hasattr(termios, f"B{rate}")
}


class RomSimulator:
    """Runs a `RomLoader` behind a pty (default) or a TCP socket, in a background thread.

    `port` is what to hand to esptool/pyserial: a `/dev/pts/N` path or `socket://127.0.0.1:P`.
    """

    def __init__(
        self,
        chip: ChipName = "esp32",
        *,
        transport: Literal["pty", "socket"] = "pty",
        download_mode: bool = True,
        flash_size: int = 4 * 1024 * 1024,
        corrupt_at: int | None = None,
        max_baud: int | None = None,
        stub: bool = True,
        boot_app_after_flash: bool = False,
        app_log: Sequence[str] = (),
        boot_log: str = "rst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n",
        improv: bool = False,
        improv_connects: bool = True,
    ) -> None:
        self.loader = RomLoader(chip, flash_size=flash_size, corrupt_at=corrupt_at, stub=stub)
        self.transport = transport
        self.download_mode = download_mode
        self.max_baud = max_baud
        self.boot_app_after_flash = boot_app_after_flash
        self.app_log = list(app_log)
        self.boot_log = boot_log
        self.received_in_app: bytearray = bytearray()  # what the host sent while the app ran
        self.improv = ImprovResponder(improv_connects) if improv else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master: int | None = None
        self._server: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._next_app_output = 0.0
        self._app_booted = False
        self.port = ""

    @property
    def flash(self) -> bytearray:
        return self.loader.flash

    @property
    def counters(self) -> Counters:
        return self.loader.counters

    def __enter__(self) -> RomSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.transport == "pty":
            master, slave = os.openpty()
            self.port = os.ttyname(slave)
            os.close(slave)  # the host's open is the only one, so its close is visible (EIO)
            flags = fcntl.fcntl(master, fcntl.F_GETFL)
            fcntl.fcntl(master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
            self._master = master
            target = self._run_pty
        else:
            server = socket.create_server(("127.0.0.1", 0))
            server.settimeout(0.05)
            self._server = server
            self.port = f"socket://127.0.0.1:{server.getsockname()[1]}"
            target = self._run_socket
        self._thread = threading.Thread(target=target, name="romsim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for closer in (self._conn, self._server):
            if closer is not None:
                with contextlib.suppress(OSError):
                    closer.close()
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None

    # --- sessions -----------------------------------------------------------------------------

    def _power_on(self) -> None:
        """A new session (port opened): a reset; a booting app starts printing shortly after."""
        self.loader.counters.sessions += 1
        self.loader.reset()
        # pyserial flushes its input right after opening, so nothing printed at that instant
        # would arrive; a real chip takes a few hundred ms to boot anyway.
        self._next_app_output = time.monotonic() + 0.05
        self._app_booted = False

    def _app_output(self) -> bytes:
        """What a running app prints by now: the boot log once, then its log, every 0.5 s."""
        if self.download_mode or time.monotonic() < self._next_app_output:
            return b""
        self._next_app_output = time.monotonic() + 0.5
        out = b"" if self._app_booted else self.boot_log.encode()
        self._app_booted = True
        return out + b"".join((line + "\r\n").encode() for line in self.app_log)

    def _power_off(self) -> None:
        if self.boot_app_after_flash and self.loader.wrote_flash:
            self.download_mode = False  # the hard reset after flashing boots the new app
        self.loader.wrote_flash = False

    def _serve(self, data: bytes, decoder: SlipDecoder) -> Iterator[bytes]:
        if not self.download_mode:
            self.received_in_app.extend(data)
            if self.improv is not None:
                yield from self.improv.feed(data)
            return
        for frame in decoder.feed(data):
            for reply in self.loader.handle(frame):
                yield slip_encode(reply)
            if self.loader.greeting is not None:
                yield slip_encode(self.loader.greeting)
                self.loader.greeting = None
            if self.loader.pending_baud is not None:
                # The answer went out at the old rate; from now on the UART runs at the new one.
                self.loader.uart_baud = self.loader.pending_baud
                self.loader.pending_baud = None

    def _link_ok(self, host_baud: int | None) -> bool:
        if self.max_baud is not None and self.loader.uart_baud > self.max_baud:
            return False
        return host_baud is None or host_baud == self.loader.uart_baud

    def _host_baud(self) -> int | None:
        assert self._master is not None
        try:
            speed = termios.tcgetattr(self._master)[5]
        except termios.error:
            return None
        return _BAUD_BY_SPEED.get(speed)

    def _run_pty(self) -> None:
        assert self._master is not None
        master = self._master
        connected = False
        decoder = SlipDecoder()
        while not self._stop.is_set():
            select.select([master], [], [], 0.005)
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                data = b""  # the host holds the port open and is quiet
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                # EIO: nobody has the port open. A close ends the session (a reset).
                if connected:
                    connected = False
                    self._power_off()
                time.sleep(0.005)
                continue
            if not connected:
                connected = True
                decoder = SlipDecoder()
                self._power_on()
            if output := self._app_output():
                self._write_pty(master, output)
            if not data:
                continue
            if not self._link_ok(self._host_baud()):
                self.loader.counters.garbled_bytes += len(data)
                continue
            for chunk in self._serve(data, decoder):
                if self._link_ok(self._host_baud()):
                    self._write_pty(master, chunk)

    @staticmethod
    def _write_pty(master: int, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            try:
                written = os.write(master, view)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return  # the host went away mid-answer
            view = view[written:]

    def _run_socket(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            self._conn = conn
            conn.settimeout(0.05)
            decoder = SlipDecoder()
            try:
                self._power_on()
                while not self._stop.is_set():
                    if output := self._app_output():
                        conn.sendall(output)
                    try:
                        data = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        break
                    if self.max_baud is not None and self.loader.uart_baud > self.max_baud:
                        self.loader.counters.garbled_bytes += len(data)
                        continue
                    for chunk in self._serve(data, decoder):
                        conn.sendall(chunk)
            except OSError:
                pass
            finally:
                conn.close()
                self._conn = None
                self._power_off()
