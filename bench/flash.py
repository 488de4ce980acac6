"""Flash a 1 MB image through esptool into the ROM-loader simulator over a pty at 460800 baud.

Prints the effective rate. The pty does not pace bytes like a UART, so the number measures the
host-side cost (esptool, compression, SLIP, our wrapper, the simulator) for regression tracking
only; it says nothing about a real board (expect ~40-90 kB/s at 460800 baud there).

    .venv/bin/python bench/flash.py [--runs 3] [--no-stub]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from hub.provision.flash import flash_image
from tests.provision.romsim import RomSimulator


def make_image(size: int) -> bytes:
    """An ESP32-S3 factory image: half pseudo-random (code-like), half zeros (padding-like)."""
    header = struct.pack("<BBBBI", 0xE9, 3, 2, 0x20, 0x40380000) + bytes([0xEE, 0, 0, 0])
    header += struct.pack("<HBHH", 9, 0, 0, 0xFFFF) + bytes(5)
    noise = b"".join(hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(size // 64))
    return (header + noise + bytes(size))[:size]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--no-stub", action="store_true")
    args = parser.parse_args()
    image = make_image(args.size)
    rates = []
    for _ in range(args.runs):
        with RomSimulator("esp32s3") as sim:
            started = time.perf_counter()
            result = flash_image(sim.port, image, baud=460800, stub=not args.no_stub)
            elapsed = time.perf_counter() - started
            assert bytes(sim.flash[: len(image)]) == image
        rates.append(len(image) / elapsed)
        print(f"  {len(image):,} bytes in {elapsed:.2f} s at {result.baud} baud")
    mode = "ROM loader" if args.no_stub else "stub"
    print(
        f"flash 1 MB via pty, {mode}: median {statistics.median(rates) / 1024:,.0f} KiB/s "
        f"(simulated, for regressions only; {args.runs} runs)"
    )


if __name__ == "__main__":
    main()
