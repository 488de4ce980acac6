"""`hub influx status|backfill`: the InfluxDB outbox from the command line.

`backfill` queues stored history through the same outbox the live stream uses, so it gets the
same acknowledgements, retries and dead letters; it runs beside a running hub (short
transactions) and the hub's forwarder sends it. InfluxDB overwrites a point with the same
series and timestamp, so backfilling a range that was already sent is harmless.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from hub.cli.common import config_option, load_or_exit, parse_since
from hub.service import STATUS_FILE
from hub.store import outbox
from hub.store.sqlite import Store

console = Console()
CHUNK = 20_000


@click.group("influx")
def influx() -> None:
    """Forwarding to InfluxDB: outbox state and backfill."""


def _live(data_dir: Path) -> dict[str, Any]:
    path = data_dir / STATUS_FILE
    try:
        status = orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    if status.get("state") != "running" or time.time() - status.get("updated_at", 0) > 60:
        return {}
    return dict(status.get("influx") or {})


@influx.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(config_path: Path | None, as_json: bool) -> None:
    """Backlog, lag, refusals and dead letters (from the store and the running hub)."""
    config = load_or_exit(config_path)
    settings = config.influx
    stored: dict[str, Any] = {}
    if config.store_path.exists():
        store = Store(config.store_path)
        try:
            st = outbox.state(store.conn)
            letters = dict(
                store.conn.execute(
                    "SELECT reason, count(*) FROM dead_letters WHERE source=? AND replayed_ts IS NULL "
                    "GROUP BY reason",
                    (outbox.DEAD_LETTER_SOURCE,),
                ).fetchall()
            )
        finally:
            store.close()
        stored = {
            "queueing": st.enabled,
            "backlog": st.backlog,
            "oldest_ts": st.oldest_ts,
            "lag_s": round(time.time() - st.oldest_ts / 1000, 3) if st.oldest_ts else 0.0,
            "max_rows": st.max_rows,
            "full": st.full,
            "refused": st.refused,
            "last_refused_ts": st.last_refused_ts,
            "dead_letters": letters,
        }
    live = _live(config.data_dir)
    data = {
        "enabled": settings.enabled,
        "url": settings.url,
        "bucket": settings.bucket,
        "outbox": stored,
        "forwarder": live,
    }
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row(
        "InfluxDB",
        f"{settings.url} bucket {settings.bucket!r}"
        + ("" if settings.enabled else " [red](influx.enabled is false)[/]"),
    )
    if live:
        table.add_row("Forwarder", f"{live.get('state')}: {live.get('summary')}")
        table.add_row(
            "Delivery",
            f"{live.get('delivered', 0)} delivered this run, {live.get('delivered_per_s', 0)} /s, "
            f"{live.get('retries', 0)} retries, last error: {live.get('last_error') or 'none'}",
        )
    else:
        table.add_row("Forwarder", "hub not running")
    if stored:
        table.add_row(
            "Outbox",
            f"{stored['backlog']} queued (budget {stored['max_rows']} rows), oldest "
            f"{stored['lag_s']:.1f} s old" + (" [bold red]FULL[/]" if stored["full"] else ""),
        )
        if stored["refused"]:
            table.add_row(
                "Refused",
                f"[red]{stored['refused']} readings stored but not queued (outbox full); "
                "send them with 'hub influx backfill'[/]",
            )
        letters = stored["dead_letters"]
        table.add_row(
            "Dead letters",
            ", ".join(f"{k}: {v}" for k, v in letters.items()) or "none",
        )
    console.print(table)


@influx.command("backfill")
@config_option
@click.option("--since", required=True, help="Start: a duration ago (7d) or an ISO time.")
@click.option("--until", default=None, help="End: a duration ago or an ISO time (default: now).")
@click.option("--device", "-d", multiple=True, help="Only these devices.")
@click.option("--metric", "-m", multiple=True, help="Only these metrics.")
def backfill(
    config_path: Path | None,
    since: str,
    until: str | None,
    device: tuple[str, ...],
    metric: tuple[str, ...],
) -> None:
    """Queue stored readings from --since on for InfluxDB (through the outbox)."""
    config = load_or_exit(config_path)
    if not config.influx.enabled:
        console.print("influx.enabled is false: configure the InfluxDB server first.")
        sys.exit(2)
    if not config.store_path.exists():
        console.print(f"No store at {config.store_path} yet.")
        sys.exit(1)
    since_ms = parse_since(since)
    until_ms = parse_since(until) if until else int(time.time() * 1000)
    store = Store(config.store_path)
    queued = 0
    full = False
    try:
        max_rows = outbox.max_rows_for(config.influx.max_outbox)
        with store.transaction() as conn:
            outbox.configure(conn, True, max_rows)
        series = [
            s
            for s in store.series()
            if (not device or s.device in device) and (not metric or s.metric in metric)
        ]
        for info in series:
            start = since_ms
            while True:
                with store.transaction() as conn:
                    room = max_rows - outbox.state(conn).backlog
                    if room <= 0:
                        full = True
                        break
                    limit = min(CHUNK, room)
                    count, last_ts = outbox.backfill_chunk(conn, info.id, start, until_ms, limit)
                queued += count
                if count < limit or last_ts is None:
                    break
                start = last_ts + 1
            if full:
                break
    finally:
        store.close()
    click.echo(f"Queued {queued} readings of {len(series)} series for InfluxDB {config.influx.url}")
    if full:
        click.echo(
            "The outbox is full (influx.max_outbox): the rest was not queued. Run backfill "
            "again once the hub has sent the backlog ('hub influx status').",
            err=True,
        )
        sys.exit(1)
