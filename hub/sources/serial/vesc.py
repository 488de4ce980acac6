"""VESC packets (spec §3): 0x02 len / 0x03 len16, payload, CRC-16/XMODEM (MSB first), 0x03.

On any bad start, length, stop byte or CRC the framer slides one byte and retries, as the
firmware's `packet_process_byte` does. A junk `03 00 FF` looks like the header of a 260-byte
packet, so silence longer than `timeout` abandons a partial packet and slides on.

`decode_get_values` reads COMM_GET_VALUES field by field and stops cleanly wherever the payload
ends (older firmware sends fewer fields). `encode_packet`/`get_values_request` build requests.
"""

from __future__ import annotations

import struct

from hub.sources.serial.crc import crc16_xmodem
from hub.sources.serial.frames import Decoded, VescPacket, VescValues
from hub.sources.serial.framing import Framer

COMM_FW_VERSION = 0
COMM_GET_VALUES = 4
MAX_PAYLOAD = 512

# (name, struct code, divisor) in wire order (FW 7.01 commands.c); None = raw integer.
GET_VALUES_FIELDS: tuple[tuple[str, str, float | None], ...] = (
    ("temp_fet", "h", 10),
    ("temp_motor", "h", 10),
    ("avg_motor_current", "i", 100),
    ("avg_input_current", "i", 100),
    ("avg_id", "i", 100),
    ("avg_iq", "i", 100),
    ("duty_cycle", "h", 1000),
    ("rpm", "i", 1),
    ("v_in", "h", 10),
    ("amp_hours", "i", 10000),
    ("amp_hours_charged", "i", 10000),
    ("watt_hours", "i", 10000),
    ("watt_hours_charged", "i", 10000),
    ("tachometer", "i", None),
    ("tachometer_abs", "i", None),
    ("fault_code", "B", None),
    ("pid_pos", "i", 1e6),
    ("controller_id", "B", None),
    ("temp_mos1", "h", 10),
    ("temp_mos2", "h", 10),
    ("temp_mos3", "h", 10),
    ("avg_vd", "i", 1000),
    ("avg_vq", "i", 1000),
    ("status", "B", None),
)
_STRUCTS = {code: struct.Struct(">" + code) for code in "hiB"}


def decode_get_values(payload: bytes | bytearray) -> dict[str, float | int]:
    """COMM_GET_VALUES reply payload (command byte included) to SI values, in wire order."""
    values: dict[str, float | int] = {}
    pos = 1
    size = len(payload)
    for name, code, div in GET_VALUES_FIELDS:
        st = _STRUCTS[code]
        if pos + st.size > size:
            break
        (raw,) = st.unpack_from(payload, pos)
        pos += st.size
        values[name] = raw if div is None else raw / div
    return values


def encode_packet(payload: bytes) -> bytes:
    """A framed VESC packet for `payload` (short or long form)."""
    if not 0 < len(payload) <= 0xFFFF:
        raise ValueError(f"VESC payload must be 1..65535 bytes, got {len(payload)}")
    crc = crc16_xmodem(payload).to_bytes(2, "big")
    if len(payload) <= 255:
        head = bytes([2, len(payload)])
    else:
        head = bytes([3]) + len(payload).to_bytes(2, "big")
    return head + payload + crc + b"\x03"


def get_values_request() -> bytes:
    """The COMM_GET_VALUES poll: 02 01 04 40 84 03."""
    return encode_packet(bytes([COMM_GET_VALUES]))


class VescFramer(Framer):
    protocol = "vesc"
    default_baud = 115200
    default_timeout = 0.05
    max_frame = MAX_PAYLOAD + 6

    def __init__(self, timeout: float | None = -1.0, max_payload: int = MAX_PAYLOAD) -> None:
        super().__init__(timeout)
        self._max = max_payload

    def _scan(self, out: list[Decoded], t: float, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        i = 0
        skipped = 0
        while i < n:
            start = buf[i]
            if start == 2:
                head = 2
                if n - i < 2:
                    if final:
                        i, skipped = i + 1, skipped + 1
                        continue
                    break
                length = buf[i + 1]
            elif start == 3:
                head = 3
                if n - i < 3:
                    if final:
                        i, skipped = i + 1, skipped + 1
                        continue
                    break
                length = buf[i + 1] << 8 | buf[i + 2]
                if length < 255:  # "a shorter packet should use less length bytes"
                    i, skipped = i + 1, skipped + 1
                    continue
            else:  # 0x04 (24-bit length) only exists above 64 KiB payloads: never here
                i, skipped = i + 1, skipped + 1
                continue
            if length == 0 or length > self._max:
                i, skipped = i + 1, skipped + 1
                continue
            end = i + head + length + 3
            if end > n:
                if final:
                    self.stats.bad["truncated"] += 1
                    i, skipped = i + 1, skipped + 1
                    continue
                break
            if buf[end - 1] != 3:
                self.stats.bad["end_byte"] += 1
                i, skipped = i + 1, skipped + 1
                continue
            payload = bytes(buf[i + head : i + head + length])
            if crc16_xmodem(payload) != buf[end - 3] << 8 | buf[end - 2]:
                self.stats.bad["crc"] += 1
                i, skipped = i + 1, skipped + 1
                continue
            frame: VescValues | VescPacket
            if payload[0] == COMM_GET_VALUES and length > 1:
                frame = VescValues(decode_get_values(payload))
            else:
                frame = VescPacket(payload[0], payload[1:])
            self._emit(out, Decoded(self.protocol, t, frame, end - i))
            i = end
        self._skip(skipped)
        del buf[:i]
