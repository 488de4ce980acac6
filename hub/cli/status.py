"""`hub status` and `hub query`: read the running hub's status file and the store."""

from __future__ import annotations

import sqlite3
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from hub.cli.common import (
    config_option,
    err_console,
    load_or_exit,
    parse_since,
    process_alive,
    store_path_or_exit,
)
from hub.service import STATUS_FILE
from hub.store.sqlite import SeriesPoints, Store, connect

console = Console()


def _fmt_ts(ms: int | float | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _samples_note(stored: int, samples: int, age: float) -> str:
    """Why 'Readings N stored' (this run, as of the status file) and 'M samples' (the whole
    store, now) differ, so the two numbers do not look like a loss."""
    if samples > stored:
        return (
            f"[dim]The store holds {samples - stored} more samples than this run stored: "
            f"readings of earlier runs, and those stored since the status was written "
            f"{age:.0f} s ago.[/]"
        )
    return (
        f"[dim]The store holds {stored - samples} fewer samples than this run stored: "
        "retention removed raw samples older than store.retention.raw (the rollups keep "
        "them), or the store was changed by hand.[/]"
    )


def _read_counts(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Counts from a read-only connection: `hub status` never writes the store."""
    conn = connect(path, readonly=True)
    try:
        counts = {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("series", "samples", "events", "dead_letters", "devices")
        }
        dead = dict(conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason"))
        return counts, dead
    finally:
        conn.close()


def _ask_health(data: dict[str, Any]) -> dict[str, Any] | None:
    """The running hub's /api/health over loopback, when its status file is stale."""
    port = (data.get("web") or {}).get("port")
    if not port:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
            return dict(orjson.loads(r.read()))
    except urllib.error.HTTPError as exc:
        try:
            return dict(orjson.loads(exc.read()))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
def status(config_path: Path | None, as_json: bool) -> None:
    """Connection state, message rates, store size and error counters of the hub (of each
    worker and the shared store, with store.url: postgresql://...)."""
    config = load_or_exit(config_path)
    if config.store.url:
        from hub.cli.status_workers import workers_status

        workers_status(config, as_json)
        return
    status_file = config.data_dir / STATUS_FILE
    data: dict[str, Any] = {}
    if status_file.exists():
        data = orjson.loads(status_file.read_bytes())
    running = (
        bool(data) and data.get("state") == "running" and process_alive(int(data.get("pid", 0)))
    )
    counts: dict[str, int] = {}
    dead: dict[str, int] = {}
    store_error = None
    if config.store_path.exists():
        try:
            counts, dead = _read_counts(config.store_path)
        except sqlite3.DatabaseError as exc:
            store_error = f"cannot read the store ({exc}); run 'hub store check'"
    live_health = None
    if running and data:
        stale = time.time() - float(data.get("updated_at", 0))
        if stale > max(10.0, 5 * config.status.interval):
            # status.json is not being written (a full disk does that): ask the hub itself.
            live_health = _ask_health(data) or {
                "status": "degraded",
                "reasons": [f"status file not updated for {stale:.0f} s (is the disk full?)"],
            }
            data["health"] = live_health
    if as_json:
        click.echo(
            orjson.dumps(
                {"running": running, "status": data, "store": counts, "dead_letters": dead},
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
        return
    if not data:
        if store_error:
            console.print(f"[red]Store {config.store_path}: {store_error}[/]")
        console.print(
            f"The hub has not run with data_dir {config.data_dir} yet. Start it with [bold]hub run[/]."
        )
        sys.exit(1)
    broker, ingest, store_info = data["broker"], data["ingest"], data["store"]
    age = time.time() - data["updated_at"]
    state = (
        "[green]running[/]"
        if running
        else f"[red]{data.get('state') if data.get('state') != 'running' else 'not running'}[/]"
    )
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row(
        "Hub", f"{state} (pid {data['pid']}, status {age:.0f} s old, version {data['version']})"
    )
    health = data.get("health") or {}
    if running and health:
        if health.get("status") == "ok":
            table.add_row("Health", "[green]ok[/]")
        else:
            reasons = health.get("reasons") or ["unknown"]
            table.add_row("Health", "[bold red]degraded[/]: " + "\n".join(reasons))
    if store_error:
        table.add_row("Store", f"[red]{store_error}[/]")
    table.add_row(
        "Broker",
        f"{broker['url']} {'(managed)' if broker['managed'] else ''} - {broker['state']}, MQTT {broker.get('protocol') or '?'}, {broker.get('connects', 0)} connects",
    )
    if broker.get("session_lost"):
        table.add_row(
            "[red]Session[/]",
            f"[red]lost {broker['session_lost']} times[/] on reconnect: taken over by a client "
            "using the hub's client id, or the broker restarted without persistence (see the log)",
        )
    if broker.get("taken_over"):
        # Another client used the hub's client id: the broker handed it the hub's messages.
        table.add_row(
            "[red]Session[/]",
            f"[red]taken over {broker['taken_over']} times[/] by a client using the hub's client id "
            f"(last {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(broker.get('last_taken_over', 0)))}): "
            "tie client ids to logins on the broker (deploy/mosquitto/)",
        )
    table.add_row(
        "Messages",
        f"{ingest.get('messages', 0)} received, {ingest.get('messages_per_s', 0)} /s now",
    )
    stored = int(ingest.get("readings_stored", 0))
    table.add_row(
        "Readings",
        f"{stored} stored since the hub started at {_fmt_ts(data.get('started_at', 0) * 1000)}, {ingest.get('duplicates', 0)} duplicates skipped, {ingest.get('events', 0)} events",
    )
    rejected = ingest.get("rejected") or {}
    table.add_row("Rejected", ", ".join(f"{k}: {v}" for k, v in sorted(rejected.items())) or "none")
    failures = ingest.get("deriver_failures_by") or {}
    if failures:  # derived readings are missing for these batches (dead letters, source derive)
        table.add_row(
            "Derivations",
            "failed: " + ", ".join(f"{k} {v} times" for k, v in sorted(failures.items())),
        )
    size_mb = store_info.get("size_bytes", 0) / 1e6
    table.add_row(
        "Store",
        f"{store_info['path']} ({size_mb:.1f} MB, {counts.get('series', 0)} series, {counts.get('samples', 0)} samples)",
    )
    samples = counts.get("samples", 0)
    if counts and samples != stored:
        table.add_row("", _samples_note(stored, samples, age))
    table.add_row("Dead letters", ", ".join(f"{k}: {v}" for k, v in sorted(dead.items())) or "none")
    alerts = data.get("alerts")
    if isinstance(alerts, dict) and "rules" in alerts:
        table.add_row("Alerts", f"{alerts.get('firing', 0)} firing, {alerts['rules']} rules")
    influx = data.get("influx")
    if isinstance(influx, dict) and influx.get("summary"):
        table.add_row("InfluxDB", str(influx["summary"]))
    web = data.get("web")
    if isinstance(web, dict) and web.get("url"):
        table.add_row(
            "Dashboard", str(web["url"]) if not web.get("error") else f"off: {web['error']}"
        )
    console.print(table)


def _query_postgres(
    url: str, metric: str, device: str | None, start: int, end: int, points: int
) -> list[SeriesPoints]:
    """The query on the PostgreSQL store (read-only); unreachable is a message, exit 1."""
    from hub.store.postgres_read import PostgresReadStore
    from hub.store.reader import StoreUnavailable

    reader = PostgresReadStore(url, name="hub-query")
    try:
        return reader.query(metric, device, start, end, points)
    except StoreUnavailable as exc:
        err_console.print(f"[red]{exc}[/]", highlight=False)
        sys.exit(1)
    finally:
        reader.close()


@click.command()
@config_option
@click.argument("metric")
@click.option("--device", "-d", default=None, help="Only this device.")
@click.option(
    "--since",
    default="1h",
    show_default=True,
    help="Start: a duration ago (10m, 1h, 7d) or an ISO time.",
)
@click.option("--until", default=None, help="End: a duration ago or an ISO time (default: now).")
@click.option(
    "--points",
    default=20,
    show_default=True,
    help="At most this many points per series (downsampled).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def query(
    config_path: Path | None,
    metric: str,
    device: str | None,
    since: str,
    until: str | None,
    points: int,
    as_json: bool,
) -> None:
    """Print METRIC's samples (per device and series) as a table."""
    config = load_or_exit(config_path)
    end = parse_since(until) if until else int(time.time() * 1000)
    start = parse_since(since)
    if config.store.url:
        results = _query_postgres(config.store.url, metric, device, start, end, points)
    else:
        store = Store(store_path_or_exit(config))
        try:
            results = store.query(metric, device, start, end, points)
        finally:
            store.close()
    if not results:
        console.print(
            f"No series for metric {metric!r}{f' on {device!r}' if device else ''}. `hub query` needs a metric name like pm2_5, co2, pack_voltage."
        )
        sys.exit(1)
    for result in results:
        info = result.series
        if as_json:
            for p in result.points:
                click.echo(
                    orjson.dumps(
                        {
                            "device": info.device,
                            "metric": info.metric,
                            "tags": info.tags,
                            "ts": p.ts,
                            "mean": p.mean,
                            "min": p.min,
                            "max": p.max,
                            "count": p.count,
                            "unit": info.unit,
                        }
                    ).decode()
                )
            continue
        tags = ",".join(f"{k}={v}" for k, v in info.tags.items())
        table = Table(
            title=f"{info.device} {info.metric}{f' [{tags}]' if tags else ''} ({info.unit or 'no unit'}, {result.resolution})"
        )
        table.add_column("time")
        table.add_column("mean", justify="right")
        table.add_column("min", justify="right")
        table.add_column("max", justify="right")
        table.add_column("samples", justify="right")
        for p in result.points:
            table.add_row(
                _fmt_ts(p.ts), f"{p.mean:.3f}", f"{p.min:.3f}", f"{p.max:.3f}", str(p.count)
            )
        console.print(table)
