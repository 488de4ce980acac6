"""What one ingest batch costs the store thread, warm and after a pause: how much of the CPU
per message at a steady trickle is the work itself and how much is waking up to it.

The same kind of batches as bench/ingest.py's steady stream (hub JSON from 20 air nodes, one
reading each, distinct timestamps; here always pm25) go through IngestCore.prepare + commit on
a real SQLite store, in this process's thread:

  warm:   back to back, the baseline measured in the same run;
  paused: with a sleep of --pause between batches, as at a steady load with group commit
          (the store thread sleeps batch_wait between two batches).

    .venv/bin/python bench/batch_cost.py [--sizes 6,60] [--pause 30ms] [--rounds 200]

CPU time of this thread (time.thread_time), median per batch and per message. The paused
figure minus the warm one is what the machine charges for going back to work after a sleep
(caches, TLB, branch predictors refilled); on a shared VM it can be larger than the work.
Printed, not asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.bus.mqtt import Message, MqttConnection
from hub.bus.router import Router
from hub.config import HubConfig
from hub.config.base import parse_duration
from hub.ingest import IngestCore
from hub.store.sqlite import Store
from hub.store.writer import StoreWriter

NODES = 20


class Batches:
    """Batches of the steady stream: one reading per message, a distinct timestamp each."""

    def __init__(self) -> None:
        self.sent = 0
        self.base_ms = int(time.time() * 1000) - 3_600_000

    def next(self, size: int) -> list[Message]:
        out = []
        for _ in range(size):
            i = self.sent
            self.sent += 1
            payload = orjson.dumps({"ts_ms": self.base_ms + i, "values": {"pm25": float(i % 50)}})
            received_ms = time.time_ns() // 1_000_000
            out.append(
                Message(f"hub/readings/air{i % NODES}", payload, 1, i % 65_000 + 1, False, False,
                        received_ms)
            )  # fmt: skip
        return out


def measure(core: IngestCore, batches: Batches, size: int, pause: float, rounds: int) -> float:
    """Median CPU seconds of this thread for one batch of `size` messages."""
    spent = []
    for _ in range(rounds):
        batch = batches.next(size)
        started = time.thread_time()
        core.commit(core.prepare(batch))
        spent.append(time.thread_time() - started)
        if pause:
            time.sleep(pause)
    return statistics.median(spent)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="6,60", help="messages per batch, comma-separated")
    parser.add_argument("--pause", default="30ms", help="sleep between batches when paused")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    pause = parse_duration(args.pause)

    with tempfile.TemporaryDirectory(prefix="hub-batch-cost-") as tmp:
        store = Store(Path(tmp) / "hub.db", "normal")
        writer = StoreWriter(store)
        # prepare() and commit() never touch the connection: a stand-in for its type only
        connection = cast(MqttConnection, cast(Any, object()))
        core = IngestCore(connection, writer, Router(HubConfig()), batch_wait=pause)
        batches = Batches()
        measure(core, batches, max(sizes), 0.0, 50)  # series created, caches filled
        print(
            f"store thread CPU per batch (IngestCore.prepare + commit, SQLite), pause {pause * 1000:g} ms"
        )
        for size in sizes:
            warm = measure(core, batches, size, 0.0, args.rounds)
            paused = measure(core, batches, size, pause, max(20, args.rounds // 4))
            print(
                f"  {size:>4} messages: warm {warm * 1e6:6.0f} us ({warm / size * 1e6:4.0f} us/msg); "
                f"after a pause {paused * 1e6:6.0f} us ({paused / size * 1e6:4.0f} us/msg): "
                f"{paused / warm:.1f}x warm, +{(paused - warm) * 1e6:.0f} us for waking up"
            )
        writer.close()


if __name__ == "__main__":
    main()
