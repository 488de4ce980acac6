"""InfluxDB forwarding figures against a real VictoriaMetrics (printed, not asserted).

1. Ceiling: a raw HTTP POST of prebuilt line protocol (5,000 lines a request) to /api/v2/write.
2. The forwarder: outbox -> line protocol strings -> influxdb-client (synchronous writes) ->
   delete acknowledged rows, from a 1.2 M-row backlog (a 10-minute outage at 2,000 readings/s).
3. Catch-up: the same backlog drained while live ingest keeps adding 2,000 readings/s.

    .venv/bin/python bench/influx.py [--rows 1200000] [--rate 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.model import Reading
from hub.store import outbox
from hub.store.influx import Forwarder, RawSender, StoreWriter
from hub.store.influx_settings import InfluxSettings
from hub.store.sqlite import Batch, Store
from tests.influx.victoria import VictoriaMetrics

SERIES = [
    (f"airq-{n}", m) for n in range(1, 4) for m in ("pm2_5", "co2", "temperature", "humidity")
] + [("buggy", m) for m in ("pack_voltage", "current", "rpm", "esc_temperature")]


def fill(store: Store, rows: int, start_ms: int, step_ms: int = 1) -> None:
    """`rows` readings spread over the series, committed in ingest-sized batches."""
    batch: list[Reading] = []
    for i in range(rows):
        device, metric = SERIES[i % len(SERIES)]
        batch.append(
            Reading(device, metric, (i % 1000) * 0.25, start_ms + (i // len(SERIES)) * step_ms)
        )
        if len(batch) == 5000:
            store.commit(Batch(readings=batch))
            batch = []
    if batch:
        store.commit(Batch(readings=batch))


def settings(url: str) -> InfluxSettings:
    return InfluxSettings.model_validate(
        {"enabled": True, "url": url, "org": "bench", "bucket": "bench", "token": "t",
         "batch_size": 5000, "linger": 0.0, "min_free_disk": 0, "max_outbox": "4GiB"}
    )  # fmt: skip


async def drain(store: Store, cfg: InfluxSettings, live_rate: float) -> tuple[float, int]:
    writer = StoreWriter(store)
    forwarder = Forwarder(cfg, store.path, writer, keep_dead_letter=store.keep_dead_letter)
    stop = threading.Event()
    live_total = [0]

    def live() -> None:
        # Live ingest during the catch-up: 2,000 readings/s in 10 commits a second.
        start_ms = int(time.time() * 1000)
        t0 = time.monotonic()
        i = 0
        while not stop.is_set():
            n = int(live_rate / 10)
            items = [Reading("live", "co2", float(i + k), start_ms + (i + k)) for k in range(n)]
            store.commit(Batch(readings=items))
            i += n
            live_total[0] = i
            time.sleep(max(0.0, t0 + i / live_rate - time.monotonic()))

    thread = threading.Thread(target=live, daemon=True)
    started = time.perf_counter()
    task = asyncio.create_task(forwarder.run())
    if live_rate:
        thread.start()
    try:
        while True:
            await asyncio.sleep(0.2)
            await forwarder.refresh()
            st = forwarder.outbox_state
            if st is not None and st.backlog <= live_rate * 1.5 and forwarder.stats.delivered:
                break
            if task.done():
                task.result()
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        if live_rate:
            thread.join()
        await forwarder.stop()
        await task
        forwarder.close()
        writer.close()
    return elapsed, forwarder.stats.delivered


def raw_ceiling(store: Store, cfg: InfluxSettings, rows: int) -> float:
    async def bodies() -> list[str]:
        writer = StoreWriter(store)
        forwarder = Forwarder(cfg, store.path, writer, keep_dead_letter=store.keep_dead_letter)
        out: list[str] = []
        cursor = 0
        while sum(b.count("\n") + 1 for b in out) < rows:
            batch = forwarder._read(cursor, 5000)
            if not batch:
                break
            out.append(forwarder.body(batch))
            cursor = batch[-1].id
        forwarder.close()
        writer.close()
        return out

    prebuilt = asyncio.run(bodies())
    sender = RawSender(cfg)
    points = sum(b.count("\n") + 1 for b in prebuilt)
    started = time.perf_counter()
    for body in prebuilt:
        result = sender.write(body)
        assert result.kind == "ok", result
    elapsed = time.perf_counter() - started
    sender.close()
    return points / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_200_000, help="backlog (outbox rows)")
    parser.add_argument("--rate", type=float, default=2000.0, help="live readings/s in catch-up")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, VictoriaMetrics(Path(tmp) / "vm") as vm:
        cfg = settings(vm.url)
        store = Store(Path(tmp) / "hub.db", "normal")
        with store.transaction() as conn:
            outbox.configure(conn, True, outbox.max_rows_for(cfg.max_outbox))
        now_ms = int(time.time() * 1000)
        t = time.perf_counter()
        fill(store, args.rows, now_ms - 600_000)
        print(f"backlog: {args.rows} outbox rows built in {time.perf_counter() - t:.1f} s "
              f"({outbox.state(store.conn).backlog} queued, "
              f"{store.size_bytes() / 1e6:.0f} MB store)")  # fmt: skip

        ceiling = raw_ceiling(store, cfg, min(args.rows, 500_000))
        print(f"raw HTTP POST ceiling (prebuilt lines, 5000/request): {ceiling:,.0f} points/s")

        elapsed, delivered = asyncio.run(drain(store, cfg, 0.0))
        print(f"forwarder, outbox -> influxdb-client -> acknowledged delete: {delivered:,} points "
              f"in {elapsed:.1f} s = {delivered / elapsed:,.0f} points/s (target >= 60,000)")  # fmt: skip

        fill(store, args.rows, now_ms - 1_200_000)
        elapsed, delivered = asyncio.run(drain(store, cfg, args.rate))
        print(f"catch-up after a 10-minute outage ({args.rows:,} queued) with {args.rate:,.0f} "
              f"live readings/s still arriving: {elapsed:.1f} s ({delivered:,} delivered)")  # fmt: skip
        store.close()


if __name__ == "__main__":
    main()
