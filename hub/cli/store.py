"""`hub store check|recover`: is the store sound, and getting back what is intact when not."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import orjson

from hub.cli.common import config_option, err_console, load_or_exit
from hub.store import recovery


@click.group("store")
def store_group() -> None:
    """Check the store's integrity, and recover a damaged one."""


def _running_pid(data_dir: Path) -> int | None:
    """The pid of a hub that runs on this data directory, if one does."""
    try:
        status = orjson.loads((data_dir / "status.json").read_bytes())
    except (OSError, ValueError):
        return None
    pid = int(status.get("pid", 0) or 0)
    if status.get("state") != "running" or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


@store_group.command("check")
@config_option
def check(config_path: Path | None) -> None:
    """The full integrity check of the store (PRAGMA integrity_check). Exit 1 when damaged."""
    config = load_or_exit(config_path)
    path = config.store_path
    if not path.exists():
        err_console.print(f"No store at {path}.")
        sys.exit(2)
    click.echo(f"Checking {path} ({path.stat().st_size / 1e6:.1f} MB) ...")
    result = recovery.check(path)
    if result.ok:
        click.echo("ok: no problems found")
        return
    click.echo(f"DAMAGED: {len(result.problems)} problem(s)")
    for problem in result.problems[:20]:
        click.echo(f"  {problem}")
    if len(result.problems) > 20:
        click.echo(f"  ... and {len(result.problems) - 20} more")
    click.echo(
        "Stop the hub, then run 'hub store recover' to copy everything intact into a new "
        "store (the damaged file is kept beside it)."
    )
    sys.exit(1)


@store_group.command("recover")
@config_option
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the recovered store here and leave the damaged one in place.",
)
def recover(config_path: Path | None, output: Path | None) -> None:
    """Copy everything intact of a damaged store into a new one (SQLite's recovery).

    Without --output the recovered store takes the store's name and the damaged file is
    renamed to <name>.damaged-<time>. Refuses while a hub runs on the store.
    """
    config = load_or_exit(config_path)
    path = config.store_path
    if not path.exists():
        err_console.print(f"No store at {path}.")
        sys.exit(2)
    pid = _running_pid(config.data_dir)
    if pid is not None and output is None:
        err_console.print(f"A hub (pid {pid}) runs on {path}: stop it first.")
        sys.exit(2)
    try:
        result = recovery.recover(path, output)
    except recovery.RecoveryError as exc:
        err_console.print(f"Recovery failed: {exc}")
        sys.exit(1)
    click.echo(
        f"Recovered {result.samples:,} samples in {result.series:,} series into {result.recovered}"
        " (integrity check: ok)."
    )
    if output is None:
        click.echo(f"The damaged store is kept as {result.kept_damaged}.")


@store_group.command("migrate-to")
@config_option
@click.argument("url")
@click.option(
    "--from",
    "source",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The SQLite store to copy (default: store.path of hub.yaml).",
)
def migrate_to_command(config_path: Path | None, url: str, source: Path | None) -> None:
    """Copy the SQLite store into PostgreSQL (URL: postgresql://user@host:port/db).

    Series, samples, rollups, events, devices, dead letters, drive sessions and alerts.
    Resumable: run it again after an interruption and it goes on where it stopped. Exit 1
    when a table's count differs at the end. Stop the hub first (or copy a backup).
    """
    from hub.store.migrate import migrate_to
    from hub.store.postgres import is_postgres_url, redact
    from hub.store.sqlite import StoreError

    if not is_postgres_url(url):
        err_console.print("The target must be a postgresql://... URL.")
        sys.exit(2)
    config = load_or_exit(config_path)
    path = source or config.store_path
    if source is None and _running_pid(config.data_dir) is not None:
        err_console.print(f"A hub is running on {path}: stop it first (or copy a backup).")
        sys.exit(1)
    click.echo(f"Copying {path} into {redact(url)} ...")
    try:
        report = migrate_to(path, url, progress=lambda t, n: click.echo(f"  {t}: {n}", err=True))
    except StoreError as exc:
        err_console.print(str(exc))
        sys.exit(4)
    for table, count in report.source.items():
        click.echo(
            f"{table:18} {count:>12,} in SQLite  {report.target.get(table, 0):>12,} in PostgreSQL"
        )
    if report.mismatches:
        err_console.print(f"Counts differ: {report.mismatches}")
        sys.exit(1)
    click.echo("ok: every count matches")
