"""Replay a capture (hub capture file or Saleae CSV) through the decoders.

Pure apart from reading the file and the optional pacing `sleep`: `--speed 10x` sleeps a tenth
of each recorded gap; no speed replays as fast as it can.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hub.sources.serial.capture import CaptureMeta, read_capture
from hub.sources.serial.detect import detect_chunks
from hub.sources.serial.frames import Decoded
from hub.sources.serial.framing import Framer, FramerStats
from hub.sources.serial.protocols import make_framer
from hub.sources.serial.settings import EscSettings


def parse_speed(text: str | None) -> float | None:
    """'10x' / '10' / '0.5x' -> 10.0 / 10.0 / 0.5; None or 'max' -> None (no pacing)."""
    if text is None or text.strip().lower() in ("", "max"):
        return None
    value = float(text.strip().lower().removesuffix("x"))
    if value <= 0:
        raise ValueError(f"speed must be positive, got {text!r}")
    return value


@dataclass(slots=True)
class Replay:
    path: Path
    protocol: str
    meta: CaptureMeta
    framer: Framer
    detected: str | None = None
    frames: list[Decoded] = field(default_factory=list)

    @property
    def stats(self) -> FramerStats:
        return self.framer.stats


def open_replay(path: Path, protocol: str | None = None, settings: EscSettings | None = None) -> tuple[Replay, Iterator[tuple[float, bytes]]]:  # fmt: skip
    """The framer chosen for `path` (given, from the capture header, or detected) and its chunks."""
    meta, chunks = read_capture(path)
    detected = None
    if protocol is None or protocol == "auto":
        protocol = meta.protocol
    if protocol is None:
        rows = list(chunks)
        result = detect_chunks(rows, settings)
        if result.protocol is None:
            raise ValueError(f"{path}: could not detect the protocol\n{result.describe()}")
        protocol = detected = result.protocol
        chunks = iter(rows)
    framer = make_framer(protocol, settings)
    if framer is None:
        raise ValueError(f"unknown protocol {protocol!r}")
    return Replay(path, protocol, meta, framer, detected), chunks


def replay(
    path: Path,
    protocol: str | None = None,
    settings: EscSettings | None = None,
    speed: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Replay, Iterator[Decoded]]:
    """(the replay's framer and metadata, an iterator over every decoded frame in order)."""
    state, chunks = open_replay(path, protocol, settings)

    def frames() -> Iterator[Decoded]:
        last: float | None = None
        for t, data in chunks:
            if speed is not None and last is not None and t > last:
                sleep((t - last) / speed)
            last = t
            yield from state.framer.feed(data, t)
        yield from state.framer.flush()

    return state, frames()
