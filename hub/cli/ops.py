"""`hub backup`, `hub restore`, `hub migrate`: operating a hub's data.

The work is in hub.store.backup; this module turns it into commands with clear messages and
exit codes (0 done, 1 failed, 2 refused: bad input or a running hub).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from hub.cli.common import config_option, load_or_exit, resolve_config_path
from hub.cli.store import _running_pid
from hub.store import backup as ops


def _fail(message: str, code: int = 1) -> None:
    # click.echo, not the rich console: a message must not be wrapped mid-path.
    click.echo(message, err=True)
    sys.exit(code)


@click.command("backup")
@config_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Backup file (default: hub-backup-<time>.tar in the current directory; .tar.gz compresses).",
)
@click.option(
    "--secrets",
    is_flag=True,
    help="Also back up hub.yaml and the secrets (device keys, MQTT passwords, web token hash).",
)
def backup(config_path: Path | None, output: Path | None, secrets: bool) -> None:
    """Back up the store while the hub runs (a consistent snapshot), into one 0600 file.

    Holds samples, rollups, the InfluxDB outbox, dead letters, alerts, RC sessions and the
    device registry; with --secrets also the config file and credentials.
    """
    config = load_or_exit(config_path)
    output = output or Path(f"hub-backup-{time.strftime('%Y%m%d-%H%M%S')}.tar")
    try:
        result = ops.take_backup(
            config.store_path,
            config.data_dir,
            output,
            secrets=secrets,
            config_file=resolve_config_path(config_path),
        )
    except ops.BackupError as exc:
        _fail(f"Backup failed: {exc}")
        return
    click.echo(
        f"Backed up {result.samples:,} samples (schema {result.schema}) to {result.path} "
        f"({result.path.stat().st_size / 1e6:.1f} MB, mode 0600, {result.seconds:.1f} s)."
    )
    if not secrets:
        click.echo("Secrets and hub.yaml were not included (add --secrets to include them).")


@click.command("restore")
@config_option
@click.argument("archive", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--secrets",
    is_flag=True,
    help="Also restore the config file and secrets, when the backup holds them.",
)
def restore(config_path: Path | None, archive: Path, secrets: bool) -> None:
    """Restore a backup made by `hub backup`. The hub must be stopped.

    The files it replaces are kept beside them as <name>.before-restore-<time>.
    """
    config = load_or_exit(config_path)
    pid = _running_pid(config.data_dir)
    if pid is not None:
        _fail(
            f"A hub (pid {pid}) runs on {config.data_dir}: stop it first "
            "(systemctl stop hub, or docker compose stop hub).",
            2,
        )
    target_config = resolve_config_path(config_path) or Path("hub.yaml")
    try:
        result = ops.restore_backup(
            archive,
            config.store_path,
            config.data_dir,
            secrets=secrets,
            config_file=target_config if secrets else None,
        )
    except ops.BackupError as exc:
        _fail(f"Restore refused: {exc}", 2)
        return
    click.echo(
        f"Restored {result.samples:,} samples (schema {result.schema}) to {result.store} "
        "(integrity check: ok)."
    )
    for restored_file in result.files[1:]:
        click.echo(f"  restored {restored_file}")
    for kept in result.kept:
        click.echo(f"  kept the previous {kept.name.split('.before-restore-')[0]} as {kept}")


@click.command("migrate")
@config_option
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Only say which schema the store has and whether it needs an upgrade (exit 1 if so).",
)
@click.option(
    "--no-backup",
    is_flag=True,
    help="Do not keep a copy of the store as it was before the upgrade.",
)
def migrate(config_path: Path | None, check_only: bool, no_backup: bool) -> None:
    """Upgrade the store to this hub's schema (a copy of the old one is kept first).

    `hub run` also upgrades at start; this does it on purpose, with the hub stopped, so a
    long upgrade or a failing one happens while you watch. A store written by a newer hub is
    refused: stores are never downgraded.
    """
    config = load_or_exit(config_path)
    path = config.store_path
    current = ops.SCHEMA_VERSION
    found = ops.schema_of(path) if path.exists() else None
    if not path.exists():
        _fail(f"No store at {path}.", 2)
    if found is None:
        _fail(f"{path} is not a hub store (it has no schema version).", 2)
    assert found is not None
    if found > current:
        _fail(
            f"{path} was written by a newer hub (schema {found}, this hub knows {current}). "
            "Upgrade the hub; a store is never downgraded.",
            2,
        )
    if check_only:
        if found == current:
            click.echo(f"{path}: schema {found}, up to date.")
            return
        click.echo(
            f"{path}: schema {found}, this hub upgrades it to {current} (run 'hub migrate')."
        )
        sys.exit(1)
    if found == current:
        click.echo(f"{path} is at schema {found} already: nothing to do.")
        return
    pid = _running_pid(config.data_dir)
    if pid is not None:
        _fail(f"A hub (pid {pid}) runs on {config.data_dir}: stop it first.", 2)
    try:
        result = ops.migrate_store(path, backup=not no_backup)
    except ops.BackupError as exc:
        _fail(f"Upgrade failed: {exc}")
        return
    click.echo(f"Upgraded {path} from schema {result.before} to {result.after}.")
    if result.backup is not None:
        click.echo(f"The store as it was is kept as {result.backup} (delete it once all is well).")
