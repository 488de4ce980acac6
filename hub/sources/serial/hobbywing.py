"""Hobbywing telemetry framers (spec §2): V3 and V4 (19200, 0x9B, no checksum), HW-FOC /
XRotor (19200, 0x9B 0x16, 16-bit byte sum) and the 115200-baud 0xFE frame of "V5" air and
car ESCs (CRC-16/MODBUS).

V3 and V4 carry no checksum: a frame is accepted on its header and plausibility mask, and is
`verified` only when its packet counter continues the previous frame's.
"""

from __future__ import annotations

from hub.sources.serial.crc import crc16_modbus
from hub.sources.serial.frames import (
    Decoded,
    HobbywingFocFrame,
    HobbywingV3Frame,
    HobbywingV4Frame,
    HobbywingV4Info,
    HobbywingV5Frame,
)
from hub.sources.serial.framing import Framer

SYNC = 0x9B
IDLE_MARK = 0xB9


class HobbywingV3Framer(Framer):
    """10-byte frames: 9B, u24 counter, throttle, PWM, commutation period (spec §2.1)."""

    protocol = "hobbywing-v3"
    default_baud = 19200
    # Start-up bytes arrive many ms apart (capture): frame on header + mask + counter instead.
    default_timeout = None
    max_frame = 10

    def __init__(self, timeout: float | None = -1.0) -> None:
        super().__init__(timeout)
        self._seq: int | None = None

    def _scan(self, out: list[Decoded], t: float, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        i = 0
        skipped = 0
        while i < n:
            if buf[i] != SYNC:
                i += 1
                skipped += 1
                continue
            if n - i < 10:
                break
            if buf[i + 4] or buf[i + 6]:
                self.stats.bad["implausible"] += 1
                i += 1
                skipped += 1
                continue
            seq = buf[i + 1] << 16 | buf[i + 2] << 8 | buf[i + 3]
            frame = HobbywingV3Frame(seq, buf[i + 5], buf[i + 7], buf[i + 8] << 8 | buf[i + 9])
            verified = self._seq is not None and seq == (self._seq + 1) & 0xFFFFFF
            self._seq = seq
            self._emit(out, Decoded(self.protocol, t, frame, 10, verified))
            i += 10
        if final and i < n:
            self.stats.bad["truncated"] += 1
            skipped += n - i
            i = n
        self._skip(skipped)
        del buf[:i]


def v4_plausible(buf: bytearray, i: int) -> bool:
    """Rotorflight's mask: throttle/PWM high bytes < 4, 12-bit ADC high bytes < 0x10."""
    return (
        buf[i + 4] < 4
        and buf[i + 6] < 4
        and buf[i + 11] < 0x10
        and buf[i + 13] < 0x10
        and buf[i + 15] < 0x10
        and buf[i + 17] < 0x10
    )


class HobbywingV4Framer(Framer):
    """19-byte data frames (+0xB9 at idle) and 13-byte info frames 9B 9B … B9 (spec §2.2)."""

    protocol = "hobbywing-v4"
    default_baud = 19200
    default_timeout = 0.1
    max_frame = 19

    def __init__(self, timeout: float | None = -1.0) -> None:
        super().__init__(timeout)
        self.info: HobbywingV4Info | None = None
        self._seq: int | None = None
        self._after_data = False

    def _scan(self, out: list[Decoded], t: float, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        i = 0
        skipped = 0
        while i < n:
            b = buf[i]
            if b != SYNC:
                if not (b == IDLE_MARK and self._after_data):  # the idle-rate trailer is no junk
                    skipped += 1
                self._after_data = False
                i += 1
                continue
            self._after_data = False
            if n - i < 2:
                break
            if buf[i + 1] == SYNC:
                if n - i < 13:
                    break
                if buf[i + 4] == 0x01 and buf[i + 12] == IDLE_MARK:
                    info = HobbywingV4Info(
                        throttle_range=buf[i + 2] << 8 | buf[i + 3],
                        volt_num=buf[i + 5],
                        volt_den=buf[i + 6],
                        amp_num=buf[i + 7],
                        amp_den=buf[i + 8],
                        amp_offset_raw=buf[i + 9],
                        temp_consts=buf[i + 10] << 8 | buf[i + 11],
                    )
                    verified = self.info == info  # the same signature twice
                    self.info = info
                    self._emit(out, Decoded(self.protocol, t, info, 13, verified))
                    i += 13
                    continue
                # Not an info frame: the second 0x9B may still start a data frame.
                self.stats.bad["bad_info_frame"] += 1
                i += 1
                skipped += 1
                continue
            if n - i < 19:
                break
            if not v4_plausible(buf, i):
                self.stats.bad["implausible"] += 1
                i += 1
                skipped += 1
                continue
            seq = buf[i + 1] << 16 | buf[i + 2] << 8 | buf[i + 3]
            frame = HobbywingV4Frame(
                seq=seq,
                throttle_raw=buf[i + 4] << 8 | buf[i + 5],
                pwm_raw=buf[i + 6] << 8 | buf[i + 7],
                erpm=buf[i + 8] << 16 | buf[i + 9] << 8 | buf[i + 10],
                voltage_adc=buf[i + 11] << 8 | buf[i + 12],
                current_adc=buf[i + 13] << 8 | buf[i + 14],
                fet_temp_adc=buf[i + 15] << 8 | buf[i + 16],
                temp2_adc=buf[i + 17] << 8 | buf[i + 18],
                info=self.info,
            )
            verified = self._seq is not None and seq == (self._seq + 1) & 0xFFFFFF
            self._seq = seq
            self._emit(out, Decoded(self.protocol, t, frame, 19, verified))
            self._after_data = True
            i += 19
        if final and i < n:
            self.stats.bad["truncated"] += 1
            skipped += n - i
            i = n
        self._skip(skipped)
        del buf[:i]


FOC_LEN = 0x16
FOC_FRAME = 24


def _s16(hi: int, lo: int) -> int:
    v = hi << 8 | lo
    return v - 0x10000 if v & 0x8000 else v


class HobbywingFocFramer(Framer):
    """24-byte frames 9B 16 01 02 …, checksum = byte sum of 0..21, little-endian (spec §2.3)."""

    protocol = "hobbywing-foc"
    default_baud = 19200
    default_timeout = 0.1
    max_frame = FOC_FRAME

    def _scan(self, out: list[Decoded], t: float, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        i = 0
        skipped = 0
        while i < n:
            if buf[i] != SYNC:
                i += 1
                skipped += 1
                continue
            if n - i < 2:
                break
            if buf[i + 1] != FOC_LEN:  # info frames (9B 4C …) and junk: slide on
                i += 1
                skipped += 1
                continue
            if n - i < FOC_FRAME:
                break
            if sum(buf[i : i + 22]) & 0xFFFF != buf[i + 22] | buf[i + 23] << 8:
                self.stats.bad["checksum"] += 1
                i += 1
                skipped += 1
                continue
            if buf[i + 3] != 0x02:
                self.stats.bad["not_data"] += 1
                i += FOC_FRAME
                continue
            frame = HobbywingFocFrame(
                seq=buf[i + 4] << 8 | buf[i + 5],
                throttle_in_raw=buf[i + 6] << 8 | buf[i + 7],
                throttle_out_raw=buf[i + 8] << 8 | buf[i + 9],
                rpm_raw=buf[i + 10] << 8 | buf[i + 11],
                voltage_dv=buf[i + 12] << 8 | buf[i + 13],
                current_raw=_s16(buf[i + 14], buf[i + 15]),
                phase_current_raw=_s16(buf[i + 16], buf[i + 17]),
                mos_temp_raw=buf[i + 18],
                cap_temp_raw=buf[i + 19],
                status=buf[i + 20] << 8 | buf[i + 21],
            )
            self._emit(out, Decoded(self.protocol, t, frame, FOC_FRAME))
            i += FOC_FRAME
        if final and i < n:
            self.stats.bad["truncated"] += 1
            skipped += n - i
            i = n
        self._skip(skipped)
        del buf[:i]


def encode_foc(body22: bytes) -> bytes:
    """Append the HW-FOC byte-sum checksum (little-endian) to the first 22 bytes."""
    return body22 + (sum(body22) & 0xFFFF).to_bytes(2, "little")


# (frame type u16LE at bytes 4-5) -> frame length (Rotorflight pl5Accept).
V5_LENGTHS = {0x5C30: 32, 0x242C: 11, 0x252C: 73, 0x022B: 10}
V5_TELEMETRY = 0x5C30
V5_LEN = 32


def encode_v5(body30: bytes) -> bytes:
    """Append the CRC-16/MODBUS (little-endian) to the first 30 bytes of an 0xFE frame."""
    return body30 + crc16_modbus(body30).to_bytes(2, "little")


def _opt(value: int, missing: int = 0xFF) -> int | None:
    return None if value == missing else value


class HobbywingV5Framer(Framer):
    """0xFE/0xFD frames, length from the type table, CRC-16/MODBUS LE (spec §2.4)."""

    protocol = "hobbywing-v5"
    default_baud = 115200
    default_timeout = 0.1
    max_frame = 73

    def _scan(self, out: list[Decoded], t: float, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        i = 0
        skipped = 0
        while i < n:
            b = buf[i]
            if b != 0xFE and b != 0xFD:
                i += 1
                skipped += 1
                continue
            if n - i < 6:
                if final:
                    i += 1
                    skipped += 1
                    continue
                break
            ftype = buf[i + 4] | buf[i + 5] << 8
            size = V5_LENGTHS.get(ftype)
            if size is None:
                i += 1
                skipped += 1
                continue
            if n - i < size:
                if final:
                    self.stats.bad["truncated"] += 1
                    i += 1
                    skipped += 1
                    continue
                break
            end = i + size
            if crc16_modbus(buf[i : end - 2]) != buf[end - 2] | buf[end - 1] << 8:
                self.stats.bad["crc"] += 1
                i += 1
                skipped += 1
                continue
            if b != 0xFE or ftype != V5_TELEMETRY or size != V5_LEN:
                self.stats.bad["not_telemetry"] += 1
                i = end
                continue
            current = buf[i + 17] | buf[i + 18] << 8
            frame = HobbywingV5Frame(
                throttle_pct=buf[i + 9],
                output_pct=buf[i + 10],
                direction=buf[i + 11],
                fault_bits=buf[i + 12],
                rpm_field=buf[i + 13] | buf[i + 14] << 8,
                voltage_dv=buf[i + 15] | buf[i + 16] << 8,
                current_da=None if current == 0xFFFF else current,
                esc_temp_c=_opt(buf[i + 19]),
                bec_temp_c=_opt(buf[i + 20]),
                motor_temp_c=_opt(buf[i + 21]),
                bec_voltage_dv=_opt(buf[i + 22]),
                bec_current_da=_opt(buf[i + 23]),
            )
            self._emit(out, Decoded(self.protocol, t, frame, V5_LEN))
            i = end
        self._skip(skipped)
        del buf[:i]
