"""Protocol auto-detection: try the plausible baud rates, keep the protocol whose frames verify.

Pure core (`score`, `best`) over recorded chunks; `detect` asks a caller-supplied reader for a
sample at each baud rate, so it runs the same against a port, a pty or a list of bytes.
A VESC only answers requests, and a passive logger must not transmit on an ESC line, so VESC
is never auto-detected: choose it explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from hub.sources.serial.protocols import make_framer
from hub.sources.serial.settings import EscSettings

# Baud rate -> protocols seen at that rate, most specific first (spec §0 and §2).
BAUD_PROTOCOLS: dict[int, tuple[str, ...]] = {
    115200: ("hobbywing-v5", "kiss", "bridge"),
    19200: ("hobbywing-foc", "hobbywing-v4", "hobbywing-v3"),
    921600: ("bridge",),
}
MIN_FRAMES = 3
MIN_SCORE = 0.5

Chunks = Sequence[tuple[float, bytes]]


@dataclass(frozen=True, slots=True)
class Score:
    protocol: str
    baud: int | None
    frames: int
    verified_frames: int
    score: float  # share of the bytes that were in verified frames
    bad: dict[str, int] = field(default_factory=dict)

    @property
    def locked(self) -> bool:
        return self.verified_frames >= MIN_FRAMES and self.score >= MIN_SCORE


@dataclass(frozen=True, slots=True)
class DetectResult:
    protocol: str | None
    baud: int | None
    tried: tuple[Score, ...]

    def describe(self) -> str:
        lines = [
            f"  {s.baud or '-':>7} {s.protocol:<14} frames={s.frames:<5} verified={s.verified_frames:<5}"
            f" score={s.score:.2f}"
            for s in self.tried
        ]
        head = (
            f"found {self.protocol} at {self.baud} baud" if self.protocol else "no protocol found"
        )
        return "\n".join([head, *lines])


def score(protocol: str, chunks: Iterable[tuple[float, bytes]], baud: int | None = None,
          settings: EscSettings | None = None) -> Score:  # fmt: skip
    framer = make_framer(protocol, settings)
    if framer is None:
        raise ValueError(f"unknown protocol {protocol!r}")
    frames = verified = verified_bytes = 0
    for t, data in chunks:
        for d in framer.feed(data, t):
            frames += 1
            if d.verified:
                verified += 1
                verified_bytes += d.size
    total = framer.stats.bytes
    return Score(protocol, baud, frames, verified, verified_bytes / total if total else 0.0,
                 dict(framer.stats.bad))  # fmt: skip


def best(chunks: Chunks, protocols: Iterable[str], baud: int | None = None,
         settings: EscSettings | None = None) -> tuple[Score | None, list[Score]]:  # fmt: skip
    scores = [score(p, chunks, baud, settings) for p in protocols]
    locked = [s for s in scores if s.locked]
    winner = max(locked, key=lambda s: (s.score, s.verified_frames)) if locked else None
    return winner, scores


def detect(
    read: Callable[[int], Chunks],
    bauds: Sequence[int] = (115200, 19200),
    settings: EscSettings | None = None,
) -> DetectResult:
    """Sample each baud rate with `read(baud)` and lock onto the first protocol that verifies."""
    tried: list[Score] = []
    for baud in bauds:
        chunks = read(baud)
        winner, scores = best(chunks, BAUD_PROTOCOLS.get(baud, ()), baud, settings)
        tried.extend(scores)
        if winner is not None:
            return DetectResult(winner.protocol, baud, tuple(tried))
    return DetectResult(None, None, tuple(tried))


def detect_chunks(chunks: Chunks, settings: EscSettings | None = None) -> DetectResult:
    """Detect from bytes whose baud rate is unknown (a Saleae export): try every decoder."""
    names = dict.fromkeys(p for ps in BAUD_PROTOCOLS.values() for p in ps)
    winner, scores = best(chunks, names, None, settings)
    return DetectResult(winner.protocol if winner else None, None, tuple(scores))
