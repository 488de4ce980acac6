"""A wrong-token flood against a running hub's web API, with the hub's health watched meanwhile.

Used by the test that the API cannot be knocked over (tests/web/test_auth_flood.py) and by the
bench that prints the figures (bench/auth_flood.py). The flood runs in its own process, so
the health probe's timings are not those of a client starved by its own 50 connections.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# The routes an attacker would hammer: every one needs the token.
TARGETS = (
    ("POST", "/api/alerts/silence"),
    ("POST", "/api/dead-letters/purge"),
    ("POST", "/api/dead-letters/replay"),
    ("GET", "/api/config"),
)


@dataclass
class FloodResult:
    requests: int
    seconds: float
    codes: dict[int, int]
    errors: int
    first_429: int | None  # responses received before the first 429
    health_ms: list[float] = field(default_factory=list)
    health_failures: int = 0
    rss_before_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_after_mb: float = 0.0

    def pct(self, p: float) -> float:
        ordered = sorted(self.health_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    def summary(self) -> str:
        return (
            f"{self.requests} wrong-token requests in {self.seconds:.1f} s, codes {self.codes}, "
            f"{self.errors} transport errors, first 429 after {self.first_429} responses; "
            f"RSS {self.rss_before_mb:.1f} MB before, {self.rss_peak_mb:.1f} MB peak "
            f"(+{self.rss_peak_mb - self.rss_before_mb:.1f} MB), {self.rss_after_mb:.1f} MB after; "
            f"/api/health x{len(self.health_ms)}: p50 {self.pct(50):.1f} ms, "
            f"p99 {self.pct(99):.1f} ms, max {max(self.health_ms, default=float('nan')):.1f} ms, "
            f"{self.health_failures} failed"
        )


async def _flood(base: str, total: int, seconds: float, connections: int) -> dict[str, object]:
    codes: collections.Counter[int] = collections.Counter()
    errors = 0
    first_429: int | None = None
    received = 0
    per_connection = total // connections
    start = time.monotonic()

    async def worker(index: int) -> None:
        nonlocal errors, first_429, received
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        # verify=False: plain HTTP, and it spares 50 loads of the CA bundle at the start.
        async with httpx.AsyncClient(
            base_url=base, timeout=60, limits=limits, verify=False
        ) as client:
            for i in range(per_connection):
                # Evenly spread: `total` requests over `seconds`, each connection in turn.
                due = start + (i * connections + index) * seconds / total
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                method, path = TARGETS[(index + i) % len(TARGETS)]
                try:
                    response = await client.request(
                        method,
                        path,
                        json={"reason": "flood", "duration_s": 5, "ids": [1]},
                        headers={"Authorization": f"Bearer wrong-{index}-{i}-{'x' * 40}"},
                    )
                except httpx.HTTPError:
                    errors += 1
                    continue
                codes[response.status_code] += 1
                if response.status_code == 429 and first_429 is None:
                    first_429 = received
                received += 1
                await response.aclose()

    await asyncio.gather(*(worker(i) for i in range(connections)))
    return {
        "requests": per_connection * connections,
        "seconds": time.monotonic() - start,
        "codes": dict(codes),
        "errors": errors,
        "first_429": first_429,
    }


def _flood_process(
    base: str, total: int, seconds: float, connections: int, out: multiprocessing.Queue[object]
) -> None:
    out.put(asyncio.run(_flood(base, total, seconds, connections)))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def flood(
    base: str,
    pid: int,
    *,
    total: int = 1000,
    seconds: float = 10.0,
    connections: int = 50,
    health_every: float = 0.05,
) -> FloodResult:
    """Send `total` wrong-token requests over `seconds` from `connections` connections to the
    hub at `base` (process `pid`), probing /api/health and the hub's RSS all the while."""
    health_ms: list[float] = []
    health_failures = 0
    rss_peak = rss_before = rss_mb(pid)
    done = threading.Event()

    def probe() -> None:
        nonlocal health_failures, rss_peak
        with httpx.Client(base_url=base, timeout=30) as client:
            while not done.is_set():
                began = time.perf_counter()
                try:
                    ok = client.get("/api/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed = (time.perf_counter() - began) * 1000
                if ok:
                    health_ms.append(elapsed)
                else:
                    health_failures += 1
                rss_peak = max(rss_peak, rss_mb(pid))
                done.wait(health_every)

    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[object] = context.Queue()
    prober = threading.Thread(target=probe, name="health-probe", daemon=True)
    prober.start()
    worker = context.Process(target=_flood_process, args=(base, total, seconds, connections, out))
    worker.start()
    try:
        result = out.get(timeout=seconds + 600)
    finally:
        worker.join(30)
        if worker.is_alive():
            worker.kill()
        done.set()
        prober.join(60)
    assert isinstance(result, dict)
    time.sleep(1.0)
    return FloodResult(
        requests=int(result["requests"]),
        seconds=float(result["seconds"]),
        codes=dict(result["codes"]),
        errors=int(result["errors"]),
        first_429=result["first_429"],
        health_ms=health_ms,
        health_failures=health_failures,
        rss_before_mb=rss_before,
        rss_peak_mb=max(rss_peak, rss_mb(pid)),
        rss_after_mb=rss_mb(pid),
    )
