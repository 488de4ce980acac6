"""Improv Wi-Fi over serial: hand a freshly flashed node its Wi-Fi credentials.

Wire format (https://www.improv-wifi.com/serial/, and ESPHome's `improv_serial` component):

    "IMPROV" | version=1 | type | length | data[length] | checksum

`checksum` is the sum of every preceding byte of the packet, modulo 256. Types: 0x01 current
state, 0x02 error state, 0x03 RPC command (host -> device), 0x04 RPC result. An RPC's data is
`command | data length | data`; "send Wi-Fi settings" (0x01) carries `len ssid | ssid | len
password | password`. A result's data is `command | length | (len string | string)*` (for Wi-Fi
settings: the URLs to open next). ESPHome ends each packet it sends with a newline and shares the
UART with its log output, so the decoder finds packets inside a stream of log text.

The encoder and decoder are pure; `provision_wifi` is the serial edge. The password is written
to the port only: it is never logged, never in a repr, never in an exception message.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import serial
from serial.serialutil import SerialBase

__all__ = [
    "ImprovDecoder",
    "ImprovError",
    "ImprovPacket",
    "ImprovTimeoutError",
    "PacketType",
    "RpcCommand",
    "State",
    "WifiResult",
    "checksum",
    "encode_packet",
    "encode_rpc",
    "encode_wifi_settings",
    "provision_wifi",
]

logger = logging.getLogger(__name__)

MAGIC = b"IMPROV"
VERSION = 1
HEADER_LEN = len(MAGIC) + 3  # magic, version, type, length


class PacketType(enum.IntEnum):
    CURRENT_STATE = 0x01
    ERROR_STATE = 0x02
    RPC_COMMAND = 0x03
    RPC_RESULT = 0x04


class State(enum.IntEnum):
    AUTHORIZATION_REQUIRED = 0x01
    AUTHORIZED = 0x02
    PROVISIONING = 0x03
    PROVISIONED = 0x04


class ErrorCode(enum.IntEnum):
    NONE = 0x00
    INVALID_RPC = 0x01
    UNKNOWN_RPC = 0x02
    UNABLE_TO_CONNECT = 0x03
    UNKNOWN = 0xFF


class RpcCommand(enum.IntEnum):
    WIFI_SETTINGS = 0x01
    GET_CURRENT_STATE = 0x02
    GET_DEVICE_INFO = 0x03
    GET_WIFI_NETWORKS = 0x04


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def encode_packet(packet_type: int, data: bytes) -> bytes:
    if len(data) > 255:
        raise ValueError(f"Improv packet data is {len(data)} bytes; at most 255 fit")
    body = MAGIC + bytes([VERSION, packet_type, len(data)]) + data
    return body + bytes([checksum(body)])


def encode_rpc(command: int, data: bytes = b"") -> bytes:
    if len(data) > 253:
        raise ValueError(f"Improv RPC data is {len(data)} bytes; at most 253 fit")
    return encode_packet(PacketType.RPC_COMMAND, bytes([command, len(data)]) + data)


def encode_wifi_settings(ssid: str, password: str) -> bytes:
    ssid_bytes, password_bytes = ssid.encode(), password.encode()
    if not 1 <= len(ssid_bytes) <= 32:
        raise ValueError("A Wi-Fi SSID is 1 to 32 bytes")
    if len(password_bytes) > 64:
        raise ValueError("A Wi-Fi password is at most 64 bytes")
    data = bytes([len(ssid_bytes)]) + ssid_bytes + bytes([len(password_bytes)]) + password_bytes
    return encode_rpc(RpcCommand.WIFI_SETTINGS, data)


@dataclass(frozen=True)
class ImprovPacket:
    type: int
    data: bytes = field(repr=False)

    @property
    def state(self) -> State | None:
        if self.type == PacketType.CURRENT_STATE and len(self.data) == 1:
            try:
                return State(self.data[0])
            except ValueError:
                return None
        return None

    @property
    def error(self) -> int | None:
        if self.type == PacketType.ERROR_STATE and len(self.data) == 1:
            return self.data[0]
        return None

    def rpc_result(self) -> tuple[int, list[str]] | None:
        """(command, strings) of an RPC result, or None if this is not a well-formed one."""
        if self.type != PacketType.RPC_RESULT or len(self.data) < 2:
            return None
        command, length = self.data[0], self.data[1]
        body = self.data[2 : 2 + length]
        if len(body) != length:
            return None
        strings: list[str] = []
        at = 0
        while at < len(body):
            size = body[at]
            chunk = body[at + 1 : at + 1 + size]
            if len(chunk) != size:
                return None
            strings.append(chunk.decode("utf-8", "replace"))
            at += 1 + size
        return command, strings


class ImprovDecoder:
    """Finds Improv packets in a serial stream that also carries log text.

    Bytes that are not part of a packet are skipped; a packet with a bad checksum or version is
    dropped and counted in `rejected` (per reason), and the search resumes after its magic.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.rejected: dict[str, int] = {}

    def _reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def feed(self, data: bytes) -> list[ImprovPacket]:
        self._buf.extend(data)
        packets: list[ImprovPacket] = []
        while True:
            start = self._buf.find(MAGIC)
            if start < 0:
                # Keep a tail that could be the start of a magic split across reads.
                del self._buf[: max(0, len(self._buf) - (len(MAGIC) - 1))]
                return packets
            del self._buf[:start]
            if len(self._buf) < HEADER_LEN:
                return packets
            version, packet_type, length = self._buf[6], self._buf[7], self._buf[8]
            if version != VERSION:
                self._reject("version")
                del self._buf[:1]
                continue
            total = HEADER_LEN + length + 1
            if len(self._buf) < total:
                return packets
            frame = bytes(self._buf[:total])
            if checksum(frame[:-1]) != frame[-1]:
                self._reject("checksum")
                del self._buf[:1]
                continue
            del self._buf[:total]
            packets.append(ImprovPacket(packet_type, frame[HEADER_LEN:-1]))


class ImprovError(Exception):
    """The device refused the credentials or does not speak Improv."""


class ImprovTimeoutError(ImprovError):
    pass


@dataclass(frozen=True)
class WifiResult:
    state: State
    urls: list[str]


_ERROR_TEXT: dict[int, str] = {
    ErrorCode.INVALID_RPC: "the device rejected the Improv packet as invalid",
    ErrorCode.UNKNOWN_RPC: "the device does not know that Improv command",
    ErrorCode.UNABLE_TO_CONNECT: "the device could not connect to the Wi-Fi network",
}


def _open(port: str, baud: int) -> SerialBase:
    link: SerialBase = serial.serial_for_url(port, do_not_open=True, baudrate=baud, timeout=0.1)
    # Keep DTR/RTS released so opening the port does not reset an auto-reset board.
    link.dtr = False
    link.rts = False
    link.open()
    return link


def provision_wifi(
    port: str,
    ssid: str,
    password: str,
    *,
    baud: int = 115200,
    timeout: float = 60.0,
    hello_timeout: float = 15.0,
    clock: Callable[[], float] = time.monotonic,
) -> WifiResult:
    """Send Wi-Fi credentials to a device running ESPHome's `improv_serial`.

    First asks for the current state (repeating while the firmware boots) to learn that the
    device speaks Improv at all, then sends the settings and waits for PROVISIONED.
    """
    settings = encode_wifi_settings(ssid, password)
    hello = encode_rpc(RpcCommand.GET_CURRENT_STATE)
    decoder = ImprovDecoder()
    with _open(port, baud) as link:
        start = clock()
        next_hello = start
        state: State | None = None
        while state is None:
            now = clock()
            if now - start > hello_timeout:
                raise ImprovTimeoutError(
                    f"No Improv answer from {port} within {hello_timeout:.0f} s: the firmware "
                    "has no `improv_serial:` component, or logs on another UART"
                )
            if now >= next_hello:
                link.write(hello)
                next_hello = now + 1.0
            for packet in decoder.feed(link.read(256)):
                state = packet.state or state
        logger.info("Improv device on %s is %s", port, state.name)
        if state == State.PROVISIONED:
            logger.info("Device on %s already has Wi-Fi credentials; sending the new ones", port)
        link.write(settings)
        logger.info("Sent Wi-Fi settings for SSID %r to %s", ssid, port)
        deadline = clock() + timeout
        provisioned_at: float | None = None
        while clock() < deadline:
            for packet in decoder.feed(link.read(256)):
                if packet.error:
                    text = _ERROR_TEXT.get(packet.error, f"Improv error {packet.error:#x}")
                    raise ImprovError(f"Wi-Fi provisioning on {port} failed: {text}")
                result = packet.rpc_result()
                if result is not None and result[0] == RpcCommand.WIFI_SETTINGS:
                    return WifiResult(State.PROVISIONED, result[1])
                if packet.state == State.PROVISIONED and provisioned_at is None:
                    provisioned_at = clock()
            # ESPHome sends the result (the URLs) right after the state; don't wait long for it.
            if provisioned_at is not None and clock() - provisioned_at > 1.0:
                return WifiResult(State.PROVISIONED, [])
        raise ImprovTimeoutError(
            f"The device on {port} did not report PROVISIONED within {timeout:.0f} s "
            "(wrong password, or the network is out of reach)"
        )
