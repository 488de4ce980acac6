"""Decoder throughput per protocol on one core, against the 115200-baud line rate.

    .venv/bin/python bench/decoders.py [--seconds 1.0]

Feeds a realistic stream (valid frames with a little garbage between some of them) in
64-byte chunks, the size a pyserial read typically returns, and prints bytes/s and the margin
over 11,520 bytes/s (115200 baud 8N1). Target: >= 100x.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.sources.serial.capture import read_capture
from hub.sources.serial.hobbywing import encode_foc, encode_v5
from hub.sources.serial.kiss import encode_kiss
from hub.sources.serial.protocols import make_framer
from hub.sources.serial.vesc import encode_packet

LINE_RATE = 115200 / 10
CAPTURES = (
    Path(__file__).resolve().parents[1] / "tests" / "data"
)  # the real captures, in the checkout


def stream(protocol: str, size: int = 200_000) -> bytes:
    rng = random.Random(1)
    out = bytearray()
    i = 0
    v4 = v3 = b""
    if protocol in ("hobbywing-v4", "hobbywing-v3"):
        name = (
            "hobbywing-platinum-v4.csv"
            if protocol == "hobbywing-v4"
            else "hobbywing-platinum-pro-v3.csv"
        )
        v4 = v3 = b"".join(data for _, data in read_capture(CAPTURES / name)[1])
    while len(out) < size:
        i += 1
        if protocol == "kiss":
            frame = encode_kiss(30 + i % 20, 1600 + i % 50, i % 3000, i % 60000, i % 1000)
        elif protocol == "hobbywing-foc":
            frame = encode_foc(
                bytes.fromhex("9B160102")
                + (i % 65536).to_bytes(2, "big")
                + bytes(7)
                + b"\xf7"
                + bytes(8)
            )
        elif protocol == "hobbywing-v5":
            body = bytes.fromhex("FE01000330 5C170600".replace(" ", "")) + bytes([50, 50, 1, 0])
            body += (i % 5000).to_bytes(2, "little") + (120).to_bytes(2, "little") + b"\xff\xff"
            frame = encode_v5(body + bytes([40, 0xFF, 45, 0xFF, 0xFF]) + b"\xff" * 6)
        elif protocol == "vesc":
            frame = encode_packet(bytes([4]) + bytes(rng.randrange(256) for _ in range(73)))
        elif protocol == "bridge":
            hexed = encode_kiss(30, 1600 + i % 50, 100, i % 60000, 10).hex()
            frame = f'{{"v":1,"t_us":{i * 30000},"src":"esc0","proto":"kiss","raw":"{hexed}"}}\n'.encode()
        else:
            out += v4 if protocol == "hobbywing-v4" else v3
            continue
        out += frame
        if i % 10 == 0 and protocol != "bridge":
            out += bytes([0x11, 0x22, 0x33])  # a little line noise
    return bytes(out)


def measure(protocol: str, data: bytes, seconds: float) -> tuple[float, int]:
    chunks = [data[i : i + 64] for i in range(0, len(data), 64)]
    fed = frames = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        framer = make_framer(protocol)
        assert framer is not None
        t = 0.0
        for chunk in chunks:
            t += 0.001
            frames += len(framer.feed(chunk, t))
        fed += len(data)
    return fed / (time.perf_counter() - start), frames


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    print(f"{'protocol':<15} {'bytes/s':>12} {'x line rate':>12} {'frames/s':>10}")
    for protocol in (
        "kiss",
        "hobbywing-v3",
        "hobbywing-v4",
        "hobbywing-foc",
        "hobbywing-v5",
        "vesc",
        "bridge",
    ):
        data = stream(protocol)
        rate, frames = measure(protocol, data, args.seconds)
        frames_per_s = frames / args.seconds
        print(f"{protocol:<15} {rate:>12,.0f} {rate / LINE_RATE:>11.0f}x {frames_per_s:>10,.0f}")


if __name__ == "__main__":
    main()
