"""Raw capture files (what the logger writes) and Saleae CSV exports (what analysers write).

A capture file is the bridge CSV form of spec §5, so one reader serves both:

    # hubcap v1 protocol=kiss baud=115200 port=/dev/ttyUSB0
    1732262400123456,esc,kiss,23069004D20237010076

one row per chunk the port returned, `t_us` = receive time in Unix microseconds. Text, so a
capture can be read, grepped and cut with ordinary tools; rotated by size, oldest deleted.
A Saleae async-serial export has `Time [s],Value,Parity Error,Framing Error`, one byte a row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

HEADER = "# hubcap v1"
SALEAE_HEADER = "Time [s]"


@dataclass(slots=True)
class CaptureMeta:
    format: str  # "hubcap" | "saleae"
    protocol: str | None = None
    baud: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    bad_rows: int = 0


class CaptureWriter:
    """Appends chunks with receive timestamps; rotates at `rotate_bytes`, keeps `keep` files."""

    def __init__(
        self,
        folder: Path,
        protocol: str,
        baud: int,
        port: str = "",
        rotate_bytes: int = 64 * 1024**2,
        keep: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.folder = folder
        self.protocol = protocol
        self.baud = baud
        self.port = port
        self.rotate_bytes = rotate_bytes
        self.keep = keep
        self._clock = clock
        self._file: IO[str] | None = None
        self._size = 0
        self._seq = 0
        self.path: Path | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def _open(self) -> IO[str]:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self._clock()))
        self._seq += 1
        self.path = self.folder / f"capture-{stamp}-{self._seq:03d}.csv"
        handle = self.path.open("a", encoding="ascii")
        header = f"{HEADER} protocol={self.protocol} baud={self.baud} port={self.port}\n"
        handle.write(header)
        self._size = len(header)
        self._prune()
        return handle

    def _prune(self) -> None:
        files = sorted(self.folder.glob("capture-*.csv"), key=lambda p: p.stat().st_mtime_ns)
        for old in files[: max(0, len(files) - self.keep)]:
            if old != self.path:
                old.unlink(missing_ok=True)

    def write(self, t: float, data: bytes, src: str = "esc") -> None:
        if not data:
            return
        if self._file is None or self._size >= self.rotate_bytes:
            if self._file is not None:
                self._file.close()
            self._file = self._open()
        row = f"{round(t * 1e6)},{src},{self.protocol},{data.hex().upper()}\n"
        self._file.write(row)
        self._size += len(row)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def sniff(path: Path) -> str:
    with path.open("r", encoding="ascii", errors="replace") as handle:
        first = handle.readline()
    if first.startswith(SALEAE_HEADER):
        return "saleae"
    if first.startswith(HEADER):
        return "hubcap"
    raise ValueError(
        f"{path}: neither a hub capture ('{HEADER}') nor a Saleae CSV ('{SALEAE_HEADER},...')"
    )


def read_capture(path: Path) -> tuple[CaptureMeta, Iterator[tuple[float, bytes]]]:
    """(metadata, chunks as (receive time in seconds, bytes)) of either file format."""
    kind = sniff(path)
    meta = CaptureMeta(kind)
    if kind == "saleae":
        return meta, _saleae_rows(path, meta)
    with path.open("r", encoding="ascii", errors="replace") as handle:
        for word in handle.readline().split()[3:]:
            key, _, value = word.partition("=")
            meta.params[key] = value
    meta.protocol = meta.params.get("protocol") or None
    baud = meta.params.get("baud", "")
    meta.baud = int(baud) if baud.isdigit() else None
    return meta, _hubcap_rows(path, meta)


def _hubcap_rows(path: Path, meta: CaptureMeta) -> Iterator[tuple[float, bytes]]:
    with path.open("r", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split(",")
            try:
                t_us = int(parts[0])
                data = bytes.fromhex(parts[3])
            except (ValueError, IndexError):
                meta.bad_rows += 1  # a torn last line after a crash, most likely
                continue
            yield t_us / 1e6, data


def _saleae_rows(path: Path, meta: CaptureMeta) -> Iterator[tuple[float, bytes]]:
    with path.open("r", encoding="ascii", errors="replace") as handle:
        handle.readline()
        for line in handle:
            parts = line.strip().split(",")
            try:
                t = float(parts[0])
                value = int(parts[1], 16)
            except (ValueError, IndexError):
                meta.bad_rows += 1
                continue
            # A byte with a parity or framing error is noise on the line, not data.
            if any(p.strip() for p in parts[2:4]) or not 0 <= value <= 255:
                meta.bad_rows += 1
                continue
            yield t, bytes([value])
