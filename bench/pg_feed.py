"""What the change-feed row costs a worker's batch commit (hub.store.postgres_feed).

    .venv/bin/python bench/pg_feed.py postgresql://user@host:port/db [--batches 200]
        [--readings 4000] [--rounds 3]

Commits the same kind of batch through PostgresStore.commit with the feed row and without it
(the row's encoder switched off), alternating rounds on one database, and prints per batch:
commit time (median), the feed payload's size, and the encoding time alone. The samples of
each batch are new (distinct timestamps), as in a live stream. Figures are printed, not
asserted. The database's tables are used as they are (a scratch database is best).
"""

from __future__ import annotations

import argparse
import statistics
import time

import hub.store.postgres as pg
from hub.model import Reading
from hub.store.feed_codec import encode
from hub.store.postgres import PostgresStore
from hub.store.sqlite import Batch

DEVICES = 20


def batches(start_ms: int, count: int, readings: int) -> list[Batch]:
    out = []
    for b in range(count):
        base = start_ms + b * readings
        out.append(
            Batch(
                readings=[
                    Reading(f"rig{i % DEVICES}", "current", float(i), base + i // DEVICES, "A")
                    for i in range(readings)
                ]
            )
        )
    return out


def run(store: PostgresStore, work: list[Batch], feed: bool) -> list[float]:
    pg.encode_feed = encode if feed else (lambda batch: None)  # type: ignore[assignment]
    times = []
    for batch in work:
        started = time.perf_counter()
        store.commit(batch)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--readings", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    store = PostgresStore(args.url)
    start = int(time.time() * 1000) - 3_600_000
    results: dict[bool, list[float]] = {True: [], False: []}
    for k in range(args.rounds * 2):
        feed = k % 2 == 0
        work = batches(start, args.batches, args.readings)
        start += args.batches * args.readings
        results[feed].extend(run(store, work, feed))
    sample = batches(start, 1, args.readings)[0]
    payload = encode(sample) or b""
    t0 = time.perf_counter()
    for _ in range(50):
        encode(sample)
    encode_ms = (time.perf_counter() - t0) * 1000 / 50
    with_feed = statistics.median(results[True])
    without = statistics.median(results[False])
    print(f"batch of {args.readings} readings, {args.batches} batches x {args.rounds} rounds each:")
    print(f"  commit without the feed row: median {without:.2f} ms")
    print(
        f"  commit with the feed row:    median {with_feed:.2f} ms "
        f"(+{with_feed - without:.2f} ms, {100 * (with_feed - without) / without:+.0f}%)"
    )
    print(
        f"  feed payload: {len(payload):,} bytes ({len(payload) / args.readings:.1f} per reading), "
        f"encoded in {encode_ms:.2f} ms"
    )
    store.close()


if __name__ == "__main__":
    main()
