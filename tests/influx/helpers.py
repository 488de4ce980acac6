"""Run a Forwarder on a standalone store until a condition holds (tests and bench)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.model import Reading
from hub.store.influx import Forwarder, Sender, StoreWriter
from hub.store.influx_settings import InfluxSettings
from hub.store.sqlite import Batch, Store


def settings(url: str, **kwargs: Any) -> InfluxSettings:
    base: dict[str, Any] = {
        "enabled": True,
        "url": url,
        "org": "home",
        "bucket": "hub",
        "token": "secret-token",
        "linger": 0.05,
        "retry_min": 0.05,
        "retry_max": 0.2,
        "auth_retry": 0.3,
        "min_free_disk": 0,
    }
    base.update(kwargs)
    return InfluxSettings(**base)


def readings(n: int, devices: int = 3, start_ms: int | None = None) -> list[Reading]:
    """n readings over a few devices and metrics of both families, distinct values."""
    start = start_ms if start_ms is not None else int(time.time() * 1000) - n * 10
    metrics = ("pm2_5", "co2", "pack_voltage", "rpm")
    out = []
    for i in range(n):
        metric = metrics[i % len(metrics)]
        device = f"dev-{i % devices}" if metric in ("pm2_5", "co2") else "buggy"
        tags = {"sensor": f"{metric}_sensor"} if metric == "co2" else {}
        out.append(Reading(device, metric, round(i * 0.37 + 1, 3), start + i * 10, None, tags))
    return out


def open_store(path: Path, settings: InfluxSettings | None = None) -> Store:
    store = Store(path)
    if settings is not None:
        from hub.store import outbox

        with store.transaction() as conn:
            outbox.configure(conn, True, outbox.max_rows_for(settings.max_outbox))
    return store


def commit(store: Store, items: list[Reading]) -> None:
    store.commit(Batch(readings=items))


def forward_until(
    store: Store,
    cfg: InfluxSettings,
    done: Callable[[Forwarder], bool],
    timeout: float = 30,
    sender: Sender | None = None,
    during: Callable[[Forwarder], None] | None = None,
) -> Forwarder:
    """Run the forwarder until `done(forwarder)` (checked after a status refresh)."""

    async def main() -> Forwarder:
        writer = StoreWriter(store)
        forwarder = Forwarder(
            cfg, store.path, writer, sender, keep_dead_letter=store.keep_dead_letter
        )
        task = asyncio.create_task(forwarder.run())
        deadline = time.monotonic() + timeout
        try:
            while True:
                await asyncio.sleep(0.05)
                if task.done():
                    task.result()
                await forwarder.refresh()
                if during is not None:
                    during(forwarder)
                if done(forwarder):
                    return forwarder
                if time.monotonic() > deadline:
                    raise AssertionError(f"forwarder timed out: {forwarder.status()}")
        finally:
            await forwarder.stop()
            await asyncio.wait_for(task, 15)
            forwarder.close()
            writer.close()

    return asyncio.run(main())


def drained(forwarder: Forwarder) -> bool:
    st = forwarder.outbox_state
    return st is not None and st.backlog == 0
