"""The framer base: a byte buffer, a frame-length cap, resync, and counters per reason.

A framer is pure: `feed(data, t)` takes bytes and the time they were received (seconds on the
caller's clock; it has no clock of its own) and returns every frame that completed. Any
chunking gives the same frames. Bad frames are counted in `stats.bad[reason]` and never raised;
bytes that belonged to no frame are counted in `stats.skipped_bytes`.

Silence longer than `timeout` between two chunks means the line went idle, so a partial frame
still buffered can never complete: the framer then slides past it (VESC's "reset the parser").
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

from hub.sources.serial.frames import Decoded


@dataclass(slots=True)
class FramerStats:
    """What a framer has seen; `bad` counts rejected candidate frames per reason."""

    bytes: int = 0
    frames: int = 0
    skipped_bytes: int = 0
    bad: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "bytes": self.bytes,
            "frames": self.frames,
            "skipped_bytes": self.skipped_bytes,
            "bad": dict(self.bad),
        }


class Framer:
    """Base class: subclasses implement `_scan(out, t, final)` over `self._buf`."""

    protocol: ClassVar[str] = ""
    default_baud: ClassVar[int] = 115200
    default_timeout: ClassVar[float | None] = 0.1
    max_frame: ClassVar[int] = 64

    def __init__(self, timeout: float | None = -1.0) -> None:
        self.timeout = self.default_timeout if timeout is not None and timeout < 0 else timeout
        self.stats = FramerStats()
        self._buf = bytearray()
        self._last_t: float | None = None

    def feed(self, data: bytes | bytearray | memoryview, t: float = 0.0) -> list[Decoded]:
        """Frames completed by `data` received at `t` (an empty `data` just moves time on)."""
        out: list[Decoded] = []
        if (
            self._buf
            and self.timeout is not None
            and self._last_t is not None
            and t - self._last_t > self.timeout
        ):
            self.stats.bad["timeout"] += 1
            self._scan(out, self._last_t, final=True)
        if (
            self._last_t is not None
            and self.timeout is not None
            and t - self._last_t > self.timeout
        ):
            self._on_gap()
        if data:
            self._last_t = t
            self.stats.bytes += len(data)
            self._buf += data
            self._scan(out, t, final=False)
        return out

    def flush(self, t: float | None = None) -> list[Decoded]:
        """End of input: frames still recoverable from the buffer; the rest is counted."""
        out: list[Decoded] = []
        if self._buf:
            when = t if t is not None else self._last_t
            self._scan(out, 0.0 if when is None else when, final=True)
        return out

    def _on_gap(self) -> None:
        """The line was idle: the next byte starts a frame (header-less protocols use this)."""

    def _skip(self, n: int) -> None:
        self.stats.skipped_bytes += n

    def _emit(self, out: list[Decoded], decoded: Decoded) -> None:
        self.stats.frames += 1
        out.append(decoded)

    def _scan(self, out: list[Decoded], t: float, final: bool) -> None:
        raise NotImplementedError
