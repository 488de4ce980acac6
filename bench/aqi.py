"""Benchmark: AQI, NowCast and the EPA correction over a year of 1-minute data for 10 nodes.

    .venv/bin/python bench/aqi.py [--nodes 10] [--days 365] [--stream-nodes 1]

Makes 10 x 525,600 PM2.5 samples (5.3 M, each with the node's RH beside it), then times, on one
core (one process, one thread):
* batch: `AirFilter.feed_hourly_columns` per node (hourly means, epa_2021 correction, NowCast,
  24-h AQI) - the path for back-filling history;
* stream: `AirFilter.feed` one `Reading` at a time (pm2_5 and humidity), as the live hub does,
  for `--stream-nodes` nodes, with the per-reading cost and the 10-node figure extrapolated.
Checks that both paths give the same hourly readings and prints the figures. Data generation is
not timed.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.derive.air import AirFilter
from hub.derive.air_settings import AirNodeSettings
from hub.model import Reading

T0_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE_MS = 60_000


def make_node(seed: int, minutes: int) -> tuple[list[int], list[float], list[float]]:
    """One node's year: diurnal PM with smoke spikes and a missing stretch; RH alongside."""
    rng = random.Random(seed)
    stamps: list[int] = []
    pm: list[float] = []
    rh: list[float] = []
    level = 8.0
    start = rng.randrange(minutes // 2)
    outage = range(start, start + 600)  # a 10-hour outage
    for i in range(minutes):
        if i in outage:
            continue
        level += rng.gauss(0.0, 0.4) + (8.0 - level) * 0.01
        if rng.random() < 0.0002:
            level += rng.uniform(50, 400)  # a smoke event
        day = math.sin(i * 2 * math.pi / 1440)
        stamps.append(T0_MS + i * MINUTE_MS + rng.randrange(2000))
        pm.append(max(0.0, level + 4 * day))
        rh.append(min(100.0, max(5.0, 55 - 20 * day + rng.gauss(0, 2))))
    return stamps, pm, rh


def settings() -> AirNodeSettings:
    return AirNodeSettings(
        correction="epa_2021", aqi_in=True, aqi_in_min_pollutants=1, psychrometrics=False,
        comfort_score=False,
    )  # fmt: skip


def run_batch(name: str, data: tuple[list[int], list[float], list[float]]) -> list[Reading]:
    stamps, pm, rh = data
    flt = AirFilter(name, settings())
    return flt.feed_hourly_columns({"pm2_5": (stamps, pm), "humidity": (stamps, rh)})


def make_readings(name: str, data: tuple[list[int], list[float], list[float]]) -> list[Reading]:
    stamps, pm, rh = data
    out = []
    for ts, p, h in zip(stamps, pm, rh, strict=True):
        out.append(Reading(name, "pm2_5", p, ts))
        out.append(Reading(name, "humidity", h, ts))
    return out


def run_stream(name: str, readings: list[Reading]) -> list[Reading]:
    flt = AirFilter(name, settings())
    out: list[Reading] = []
    feed = flt.feed
    for r in readings:
        out.extend(feed(r))
    out.extend(flt.advance(readings[-1].timestamp_ms + 2 * 3_600_000))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--stream-nodes", type=int, default=1)
    args = ap.parse_args()

    minutes = args.days * 1440
    t = time.perf_counter()
    nodes = {f"node{i}": make_node(i, minutes) for i in range(args.nodes)}
    samples = sum(len(d[0]) for d in nodes.values())
    print(f"generated {samples:,} PM2.5 samples (+ RH) for {args.nodes} nodes "
          f"in {time.perf_counter() - t:.1f} s (not timed below)")  # fmt: skip

    t = time.perf_counter()
    batch = {name: run_batch(name, data) for name, data in nodes.items()}
    batch_s = time.perf_counter() - t
    made = sum(len(v) for v in batch.values())
    print(f"batch : {batch_s:6.2f} s for {samples:,} samples "
          f"({samples / batch_s / 1e6:.2f} M samples/s), {made:,} hourly readings")  # fmt: skip

    stream_s = 0.0
    fed = 0
    for name in list(nodes)[: args.stream_nodes]:
        readings = make_readings(name, nodes[name])
        t = time.perf_counter()
        stream = run_stream(name, readings)
        stream_s += time.perf_counter() - t
        fed += len(readings)
        key = [(r.metric, r.timestamp_ms, r.value, dict(r.tags)) for r in stream]
        want = [(r.metric, r.timestamp_ms, r.value, dict(r.tags)) for r in batch[name]]
        print(f"stream == batch for {name}: {key == want} ({len(key):,} readings)")
    if fed:
        per = stream_s / fed
        print(f"stream: {stream_s:6.2f} s for {fed:,} readings ({per * 1e6:.2f} us/reading); "
              f"{samples:,} samples x 2 readings -> {per * samples * 2:.1f} s extrapolated")  # fmt: skip


if __name__ == "__main__":
    main()
