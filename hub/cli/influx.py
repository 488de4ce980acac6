"""`hub influx status|backfill`: the InfluxDB outbox from the command line.

`status` finds the hub's data wherever it is run from (`-c`, `HUB_CONFIG`, `--data-dir`, or
./hub.yaml) and says which config and data dir it read.

`backfill` queues what never reached the outbox: readings refused while it was full (recorded
per series as ranges, hub/store/outbox.py) and, with `--since`, history older than the moment
forwarding began. It never queues a reading twice: each range has a persisted cursor, so an
interrupted run resumes, and a second run says "nothing left". It runs beside a running hub
(short transactions, room left for live readings) and the hub's forwarder sends what it queues.

With store.url: postgresql://... both read and write the shared PostgreSQL store
(hub.store.postgres_outbox); the live forwarder figures come from the leader worker's
status file (<data_dir>/worker-<client id>.json).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hub.cli.common import config_option, load_or_exit, parse_since, resolve_config_path
from hub.config import HubConfig
from hub.service import STATUS_FILE
from hub.store import outbox, postgres_outbox
from hub.store.postgres import PostgresStore, is_postgres_url, redact
from hub.store.sqlite import Store, StoreError

console = Console()
CHUNK = 20_000
STALE_S = 60.0  # a status.json older than this is not a running hub


@click.group("influx")
def influx() -> None:
    """Forwarding to InfluxDB: outbox state and backfill."""


def data_dir_option(func: Any) -> Any:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The hub's data directory (holds hub.db and status.json); overrides the config's.",
    )(func)


def _locate(config_path: Path | None, data_dir: Path | None) -> tuple[HubConfig, str, Path]:
    """The config, where it came from, and the data dir to read (absolute)."""
    path = resolve_config_path(config_path)
    config = load_or_exit(config_path)
    origin = str(path.resolve()) if path else "embedded defaults (no ./hub.yaml, HUB_CONFIG unset)"
    if data_dir is None:
        data_dir = config.data_dir
        # data_dir is relative to where the hub was started; from elsewhere, the folder beside
        # the config file is the next best guess.
        if not data_dir.is_absolute() and not data_dir.exists() and path is not None:
            beside = path.resolve().parent / data_dir
            if beside.exists():
                data_dir = beside
    data_dir = data_dir.resolve()
    return config.model_copy(update={"data_dir": data_dir}), origin, data_dir


def _status_file(data_dir: Path) -> tuple[dict[str, Any], float | None]:
    """The running hub's status (empty when it does not run) and the file's age."""
    path = data_dir / STATUS_FILE
    try:
        status = orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}, None
    age = time.time() - float(status.get("updated_at", 0))
    if status.get("state") != "running" or age > STALE_S:
        return {}, age
    return dict(status), age


def _worker_status(data_dir: Path) -> tuple[dict[str, Any], float | None]:
    """The leader worker's status (empty when no worker forwards) and its file's age."""
    best: tuple[dict[str, Any], float | None] = ({}, None)
    for path in sorted(data_dir.glob("worker-*.json")):
        try:
            age = time.time() - path.stat().st_mtime
            status = dict(orjson.loads(path.read_bytes()))
        except (OSError, ValueError):
            continue
        if best[1] is None or age < best[1]:
            best = ({}, age)
        if age <= STALE_S and status.get("leader"):
            return status, age
    return best


def _running(config: HubConfig, data_dir: Path) -> tuple[dict[str, Any], float | None]:
    if is_postgres_url(config.store.url):
        return _worker_status(data_dir)
    return _status_file(data_dir)


def _hub_running(config: HubConfig) -> bool:
    return bool(_running(config, config.data_dir)[0])


def _open_postgres(url: str) -> PostgresStore:
    try:
        return PostgresStore(url)
    except StoreError as exc:
        click.echo(f"{exc}", err=True)
        sys.exit(1)


def _stored(config: HubConfig) -> dict[str, Any]:
    """What the store says about the outbox; empty when there is no store yet."""
    url = config.store.url
    if is_postgres_url(url):
        assert url is not None
        pg = _open_postgres(url)
        try:
            st = postgres_outbox.state(pg.conn)
            marks = postgres_outbox.marks(pg.conn)
            letters = postgres_outbox.dead_letter_counts(pg.conn)
        finally:
            pg.close()
    elif config.store_path.exists():
        store = Store(config.store_path)
        try:
            st = outbox.state(store.conn)
            marks = outbox.marks(store.conn)
            letters = dict(
                store.conn.execute(
                    "SELECT reason, count(*) FROM dead_letters WHERE source=? AND replayed_ts IS NULL "
                    "GROUP BY reason",
                    (outbox.DEAD_LETTER_SOURCE,),
                ).fetchall()
            )
        finally:
            store.close()
    else:
        return {}
    return {
        "queueing": st.enabled,
        "backlog": st.backlog,
        "oldest_ts": st.oldest_ts,
        "lag_s": round(time.time() - st.oldest_ts / 1000, 3) if st.oldest_ts else 0.0,
        "max_rows": st.max_rows,
        "full": st.full,
        "refused": st.refused,
        "refused_unsent": st.gap_points,
        "refused_series": st.gap_series,
        "history_unsent": st.history_points,
        "last_refused_ts": st.last_refused_ts,
        "last_delivery_ts": marks.last_delivery_ts,
        "dead_letters": letters,
    }


@influx.command("status")
@config_option
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(config_path: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Backlog, refusals, health and dead letters (from the store and the running hub)."""
    config, origin, data_dir = _locate(config_path, data_dir)
    settings = config.influx
    stored = _stored(config)
    running, age = _running(config, data_dir)
    live = dict(running.get("influx") or {}) if running else {}
    postgres = is_postgres_url(config.store.url)
    data = {
        "config": origin,
        "data_dir": str(data_dir),
        "store": redact(config.store.url)
        if postgres and config.store.url
        else str(config.store_path),
        "leader": running.get("client_id") if postgres and running else None,
        "hub_running": bool(running),
        "status_age_s": round(age, 1) if age is not None else None,
        "enabled": settings.enabled,
        "url": settings.url,
        "bucket": settings.bucket,
        "outbox": stored,
        "forwarder": live,
    }
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        if not stored and not running:
            sys.exit(1)
        return
    if not stored and age is None:
        # click.echo, not rich: a path must not be broken across lines.
        click.echo(
            f"No hub data in {data_dir} (config: {origin}).\n"
            "Tell me where the hub keeps it: -c /path/to/hub.yaml, HUB_CONFIG=/path/to/hub.yaml, "
            "or --data-dir /path/to/data_dir (the folder with hub.db and status.json)."
        )
        sys.exit(1)
    # Paths on lines of their own: a table column would cut them at 80 columns.
    where = (
        f"status.json {age:.1f} s old"
        if running and age is not None
        else "hub not running"
        + (f", status.json {age:.0f} s old" if age is not None else ", no status.json")
    )
    click.echo(f"Config:   {origin}")
    click.echo(f"Data dir: {data_dir} ({where})")
    if postgres:
        leader = f"leader worker {running['client_id']}" if running else "no worker leads"
        click.echo(f"Store:    {data['store']} ({leader})")
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row(
        "InfluxDB",
        f"{settings.url} bucket {settings.bucket!r}"
        + ("" if settings.enabled else " [red](influx.enabled is false)[/]"),
    )
    if live:
        table.add_row("Forwarder", f"{live.get('state')}: {live.get('summary')}")
        health = live.get("health") or {}
        if health:
            color = "green" if health.get("status") == "ok" else "red"
            table.add_row("Health", f"[{color}]{health.get('status')}[/]: {health.get('reason')}")
        table.add_row(
            "Delivery",
            f"{live.get('delivered', 0)} delivered this run, {live.get('delivered_per_s', 0)} /s, "
            f"{live.get('retries', 0)} retries, last error: {live.get('last_error') or 'none'}",
        )
    elif running:
        # The hub runs but has no influx part: forwarding is off in the config it runs with.
        table.add_row(
            "Forwarder", "off: the running hub does not forward (influx.enabled is false)"
        )
    elif postgres:
        table.add_row(
            "Forwarder", "no leader worker's status here (start 'hub run --worker', or --data-dir)"
        )
    else:
        table.add_row("Forwarder", "hub not running (start it with 'hub run')")
    if stored:
        table.add_row(
            "Outbox",
            f"{stored['backlog']} queued (budget {stored['max_rows']} rows), oldest "
            f"{stored['lag_s']:.1f} s old" + (" [bold red]FULL[/]" if stored["full"] else ""),
        )
        if stored["refused_unsent"]:
            table.add_row(
                "Refused",
                f"[red]{stored['refused_unsent']} readings of {stored['refused_series']} series "
                "stored but never queued (outbox was full); send them with "
                "'hub influx backfill'[/]",
            )
        if stored["history_unsent"]:
            table.add_row(
                "Backfill",
                f"{stored['history_unsent']} readings of history still to queue: "
                "run 'hub influx backfill' again",
            )
        letters = stored["dead_letters"]
        table.add_row(
            "Dead letters",
            ", ".join(f"{k}: {v}" for k, v in letters.items()) or "none",
        )
    console.print(table)


@influx.command("backfill")
@config_option
@data_dir_option
@click.option(
    "--since",
    default=None,
    help="Also queue history from this far back (7d, or an ISO time) that predates forwarding.",
)
@click.option("--device", "-d", multiple=True, help="Only these devices.")
@click.option("--metric", "-m", multiple=True, help="Only these metrics.")
@click.option(
    "--wait/--no-wait",
    default=True,
    help="When the outbox is full, wait for the running hub to send it (default) or stop.",
)
def backfill(
    config_path: Path | None,
    data_dir: Path | None,
    since: str | None,
    device: tuple[str, ...],
    metric: tuple[str, ...],
    wait: bool,
) -> None:
    """Queue readings InfluxDB never got: those refused while the outbox was full, and with
    --since older history. Safe to run again: it resumes, and never queues a reading twice."""
    config, _origin, data_dir = _locate(config_path, data_dir)
    if not config.influx.enabled:
        console.print("influx.enabled is false: configure the InfluxDB server first.")
        sys.exit(2)
    since_ms = parse_since(since) if since else None
    store: Store | PostgresStore
    fns: ModuleType = outbox
    if is_postgres_url(config.store.url):
        assert config.store.url is not None
        store, fns = _open_postgres(config.store.url), postgres_outbox
    elif not config.store_path.exists():
        console.print(f"No store at {config.store_path} yet (pass -c or --data-dir).")
        sys.exit(1)
    else:
        store = Store(config.store_path)
    try:
        queued, left = _backfill(store, config, since_ms, device, metric, wait, fns)
    finally:
        store.close()
    url = config.influx.url
    if not queued and not left:
        click.echo(f"Nothing left to backfill: every stored reading in range was queued for {url}.")
        return
    if left:
        click.echo(
            f"Queued {queued} readings for InfluxDB {url}; {left} left (the outbox is full and "
            "the hub is not sending it). Run 'hub influx backfill' again once the hub forwards; "
            "it resumes where it stopped.",
            err=True,
        )
        sys.exit(1)
    click.echo(
        f"Queued {queued} readings for InfluxDB {url}; nothing left. The hub sends them now "
        "('hub influx status')."
    )


def _backfill(
    store: Store | PostgresStore,
    config: HubConfig,
    since_ms: int | None,
    device: tuple[str, ...],
    metric: tuple[str, ...],
    wait: bool,
    fns: ModuleType = outbox,
) -> tuple[int, int]:
    """Fill every range round-robin (fair across series) within the outbox budget.

    `fns` is the outbox module of the store: hub.store.outbox or hub.store.postgres_outbox
    (the same functions)."""
    max_rows = fns.max_rows_for(config.influx.max_outbox)
    headroom = max(1, max_rows // 10)  # live readings keep arriving while this runs
    series = [
        s.id
        for s in store.series()
        if (not device or s.device in device) and (not metric or s.metric in metric)
    ]
    with store.transaction() as conn:
        if fns.state(conn).max_rows != max_rows or not fns.state(conn).enabled:
            fns.configure(conn, True, max_rows)
        if since_ms is not None:
            for sid in series:
                fns.add_history(conn, sid, since_ms)
    total = sum(g.left for g in fns.gaps(store.conn, series))
    if not total:
        return 0, 0
    queued = 0
    last_progress = time.monotonic()
    progress = _Progress(total)
    try:
        while True:
            pending = fns.gaps(store.conn, series)
            if not pending:
                return queued, 0
            room = max_rows - headroom - fns.state(store.conn).backlog
            if room <= 0:
                stalled = time.monotonic() - last_progress > 120
                if not wait or not _hub_running(config) or stalled:
                    return queued, sum(g.left for g in pending)
                progress.waiting()
                time.sleep(0.5)
                continue
            share = max(1, min(CHUNK, room // len(pending)))
            for gap in pending:
                if room <= 0:
                    break
                with store.transaction() as conn:
                    count, _ = fns.fill_gap(conn, gap, min(share, room))
                room -= count
                queued += count
                last_progress = time.monotonic()
                progress.advance(count)
    finally:
        progress.close()


class _Progress:
    """A progress bar on a terminal; a line of counts every few seconds otherwise."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.bar: Progress | None = None
        self.last_line = 0.0
        if console.is_terminal:
            self.bar = Progress(
                TextColumn("Backfill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"), console=console, transient=False,
            )  # fmt: skip
            self.task = self.bar.add_task("", total=total)
            self.bar.start()
        else:
            click.echo(f"Backfill: {total} readings to queue")

    def advance(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(self.task, completed=min(self.done, self.total), description="")
        elif time.monotonic() - self.last_line >= 2.0:
            self.last_line = time.monotonic()
            click.echo(f"Backfill: queued {self.done} of {self.total}")

    def waiting(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description="outbox full: waiting for the hub to send it")
        elif time.monotonic() - self.last_line >= 5.0:
            self.last_line = time.monotonic()
            click.echo(
                f"Backfill: queued {self.done} of {self.total}; outbox full, waiting for the hub"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        else:
            click.echo(f"Backfill: queued {self.done} of {self.total}")
