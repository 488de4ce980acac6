"""KISS / BLHeli_32 / AM32 ESC telemetry: 10 bytes, no header, CRC-8 (spec §1).

Without a header the framer slides a 10-byte window until the CRC matches. A CRC-valid window
must also be plausible (voltage, temperature: an ESC that talks is powered, so a run of
zero bytes is no frame), because CRC-8 alone lets about one random window
in 256 through; a frame is `verified` only when it starts where the previous frame ended or
right after an idle gap ("locked"). An idle gap (`timeout`) ends whatever was buffered, so the
first byte after a gap is a frame start.
"""

from __future__ import annotations

from hub.sources.serial.crc import _CRC8
from hub.sources.serial.frames import Decoded, KissFrame
from hub.sources.serial.framing import Framer

FRAME_LEN = 10


def encode_kiss(
    temperature_c: int, voltage_cv: int, current_ca: int, mah: int, erpm_100: int
) -> bytes:
    """A KISS frame (for tests, the simulator and the bench)."""
    body = bytes([temperature_c & 0xFF]) + b"".join(
        v.to_bytes(2, "big") for v in (voltage_cv, current_ca, mah, erpm_100)
    )
    crc = 0
    for b in body:
        crc = _CRC8[crc ^ b]
    return body + bytes([crc])


class KissFramer(Framer):
    protocol = "kiss"
    default_baud = 115200
    # Frames are >=30 ms apart in AM32 auto mode and a frame lasts 0.87 ms, so 20 ms of
    # silence is a frame boundary while USB-latency jitter inside a frame stays below it.
    default_timeout = 0.02
    max_frame = FRAME_LEN

    def __init__(
        self,
        timeout: float | None = -1.0,
        max_voltage: float = 60.0,
        min_temperature: int = -40,
        min_voltage: float = 2.0,
    ) -> None:
        super().__init__(timeout)
        self._max_cv = int(max_voltage * 100)
        self._min_cv = int(min_voltage * 100)
        self._min_temp = min_temperature
        self._locked = True  # the start of input counts as after idle

    def _on_gap(self) -> None:
        self._locked = True  # after idle, the first byte is a frame start

    def _scan(self, out: list[Decoded], t: float, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        i = 0
        table = _CRC8
        skipped = 0
        while n - i >= FRAME_LEN:
            crc = 0
            for k in range(i, i + 9):
                crc = table[crc ^ buf[k]]
            if crc == buf[i + 9]:
                temp = buf[i] - 256 if buf[i] > 127 else buf[i]
                volt = buf[i + 1] << 8 | buf[i + 2]
                if self._min_cv <= volt <= self._max_cv and temp >= self._min_temp:
                    frame = KissFrame(
                        temp,
                        volt,
                        buf[i + 3] << 8 | buf[i + 4],
                        buf[i + 5] << 8 | buf[i + 6],
                        (buf[i + 7] << 8 | buf[i + 8]) * 100,
                    )
                    self.stats.frames += 1
                    out.append(Decoded("kiss", t, frame, FRAME_LEN, self._locked))
                    self._locked = True
                    i += FRAME_LEN
                    continue
                if not skipped:
                    self.stats.bad["implausible"] += 1
            elif not skipped:
                self.stats.bad["crc"] += 1
            self._locked = False
            skipped += 1
            i += 1
        if final and n - i:
            self.stats.bad["truncated"] += 1
            skipped += n - i
            i = n
            self._locked = False
        if skipped:
            self.stats.skipped_bytes += skipped
        del buf[:i]
