"""`hub status` for workers on a PostgreSQL store (store.url): each worker's status file in
data_dir (worker-<client id>.json, written every status.interval) and the shared store.

Read-only: the store is read through a read-only connection, and a store that cannot be
reached is shown as such (exit 1), never a traceback.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from hub.cli.common import process_alive
from hub.config import HubConfig

console = Console()


def read_workers(config: HubConfig) -> list[dict[str, Any]]:
    """The status files of the workers that ran with this data_dir, each with `running`
    (its process is alive and its file is fresh) and `age_s`."""
    out = []
    stale_after = max(10.0, 5 * config.status.interval)
    for path in sorted(config.data_dir.glob("worker-*.json")):
        try:
            data = dict(orjson.loads(path.read_bytes()))
        except (OSError, ValueError):
            continue  # being replaced right now, or not ours
        age = time.time() - float(data.get("updated_at") or 0)
        data["age_s"] = round(age, 1)
        data["running"] = process_alive(int(data.get("pid") or 0)) and age <= stale_after
        out.append(data)
    return out


def _leading(worker: dict[str, Any]) -> str:
    """'yes' and the leader components it runs (feed, derive, alerts), for the leader."""
    if not worker.get("leader"):
        return ""
    running = (worker.get("leader_components") or {}).get("running") or []
    return f"yes ({', '.join(running)})" if running else "yes"


def forwarding(workers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The InfluxDB forwarder's section of the running leader's status file (the others say
    "standby"), or None when no running leader reports one."""
    for worker in workers:
        influx = worker.get("influx")
        if worker["running"] and worker.get("leader") and isinstance(influx, dict):
            return influx
    return None


def read_store(url: str) -> tuple[dict[str, Any], str | None]:
    """Counts, dead letters, size and the leader of the store; or the reason it is unreachable."""
    from hub.leader import leader_name
    from hub.store.postgres_read import PostgresReadStore
    from hub.store.reader import StoreUnavailable

    reader = PostgresReadStore(url, name="hub-status")
    try:
        info = {
            "counts": reader.counts(),
            "dead_letters": reader.dead_letter_counts(),
            "size_bytes": reader.size_bytes(),
            "leader": leader_name(url),
        }
        return info, None
    except StoreUnavailable as exc:
        return {}, str(exc)
    except Exception as exc:  # a schema the hub did not make, permissions: say what
        return {}, f"cannot read the store: {' '.join(str(exc).split())}"
    finally:
        reader.close()


def workers_status(config: HubConfig, as_json: bool) -> None:
    from hub.store.postgres import redact

    assert config.store.url is not None
    url = config.store.url
    workers = read_workers(config)
    store, store_error = read_store(url)
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "running": any(w["running"] for w in workers),
                    "workers": workers,
                    "store": {"url": redact(url), "error": store_error, **store},
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
        sys.exit(1 if store_error else 0)
    table = Table(show_header=False, box=None, padding=(0, 2))
    if store_error:
        table.add_row("Store", f"[red]{store_error}[/]")
    else:
        counts = store["counts"]
        table.add_row(
            "Store",
            f"{redact(url)} ({store['size_bytes'] / 1e6:.1f} MB, {counts['series']} series, "
            f"{counts['samples']} samples, {counts['events']} events)",
        )
        table.add_row("Leader", str(store["leader"] or "none (no worker holds the lock)"))
        dead = store["dead_letters"]
        table.add_row(
            "Dead letters", ", ".join(f"{k}: {v}" for k, v in sorted(dead.items())) or "none"
        )
    alerts = next(
        (
            (w.get("client_id"), w["leader_components"]["alerts"])
            for w in workers
            if w["running"] and w.get("leader")
            and isinstance(w.get("leader_components", {}).get("alerts"), dict)
        ),
        None,
    )  # fmt: skip
    if alerts is not None:
        name, section = alerts
        table.add_row(
            "Alerts",
            f"{section.get('firing', 0)} firing, {section.get('rules', 0)} rules (engine on {name})",
        )
    influx = forwarding(workers)
    if influx is not None:
        health = influx.get("health") or {}
        ok = health.get("status", "ok") == "ok"
        table.add_row(
            "InfluxDB",
            str(influx.get("summary", "")) if ok else f"[red]{influx.get('summary', '')}[/]",
        )
    console.print(table)
    if not workers:
        console.print(
            f"No worker has written its status in {config.data_dir} yet. Start one with "
            "[bold]hub run --worker --worker-id 1[/] (docs/scaling.md)."
        )
        sys.exit(1)
    rows = Table(title=f"Workers with data_dir {config.data_dir}")
    for column in ("worker", "state", "leader", "messages", "stored", "health", "dashboard"):
        rows.add_column(column)
    for w in workers:
        health = w.get("health") or {}
        ok = health.get("status", "ok") == "ok"
        web = w.get("web") or {}
        rows.add_row(
            str(w.get("client_id")),
            "[green]running[/]"
            if w["running"]
            else f"[red]not running[/] ({w['age_s']:.0f} s old)",
            _leading(w),
            str(w.get("messages", 0)),
            str(w.get("readings_stored", 0)),
            "[green]ok[/]" if ok else f"[red]degraded[/]: {health.get('reason', '')}",
            str(web.get("url") or (f"off: {web['error']}" if web.get("error") else "-")),
        )
    console.print(rows)
    if store_error:
        sys.exit(1)
