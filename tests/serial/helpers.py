from __future__ import annotations

from collections.abc import Callable

from hub.sources.serial.frames import Decoded
from hub.sources.serial.framing import Framer


def run(framer: Framer, data: bytes, chunk: int | None = None) -> list[Decoded]:
    """All frames from `data` fed whole (chunk None) or in pieces of `chunk` bytes, flushed."""
    out: list[Decoded] = []
    if chunk is None:
        out += framer.feed(data, 1.0)
    else:
        for i in range(0, len(data), chunk):
            out += framer.feed(data[i : i + chunk], 1.0)
    out += framer.flush()
    return out


def every_chunking(make: Callable[[], Framer], data: bytes) -> list[Decoded]:
    """Frames of `data`, asserting that whole, 1-byte and 7-byte feeding agree."""
    whole = run(make(), data)
    for chunk in (1, 7):
        assert [d.frame for d in run(make(), data, chunk)] == [d.frame for d in whole]
    return whole
