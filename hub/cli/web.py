"""`hub web token`: show whether the dashboard's API token exists, or replace it.

Only the token's SHA-256 digest is stored, so a lost token cannot be shown again: `--reset`
writes a new one and prints it once. A running hub notices the new file at its next check
(the file's mtime), so the old token stops working without a restart.
"""

from __future__ import annotations

from pathlib import Path

import click

from hub.cli.common import config_option, load_or_exit


@click.group("web")
def web() -> None:
    """The web dashboard and API."""


@web.command("token")
@config_option
@click.option("--reset", is_flag=True, help="Replace the token with a new one and print it once.")
def token(config_path: Path | None, reset: bool) -> None:
    """Where the API token's hash is kept; with --reset, a new token."""
    from hub.web.auth import new_token, write_token_file

    config = load_or_exit(config_path)
    path = config.data_dir / config.web.token_file
    if not reset:
        if path.exists():
            click.echo(f"An API token is set (its hash is in {path}).")
            click.echo("It is not kept in the clear; `hub web token --reset` replaces it.")
        else:
            click.echo("No API token yet: `hub run` creates one, or `hub web token --reset`.")
        return
    fresh = new_token()
    write_token_file(path, fresh)
    click.echo(f"New API token (shown once; only its hash is kept in {path}):")
    click.echo(fresh)
    click.echo("A running hub accepts it at once, and no longer accepts the old one.")
