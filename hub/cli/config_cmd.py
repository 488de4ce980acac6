"""`hub config check|example|show`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hub.cli.common import config_option, err_console, load_or_exit
from hub.config.loader import ConfigError, example_config, load_config, reference_markdown


@click.group("config")
def config_group() -> None:
    """Check and print the configuration."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def check(file: Path) -> None:
    """Validate FILE; print each problem with its path and line. Exit 2 when wrong."""
    try:
        load_config(file)
    except ConfigError as exc:
        err_console.print(
            f"[bold red]{file}: {len(exc.issues)} problem{'s' if len(exc.issues) > 1 else ''}[/]"
        )
        for issue in exc.issues:
            click.echo(f"  {issue}", err=True)
        sys.exit(2)
    click.echo(f"{file}: OK")


@config_group.command("example")
def example() -> None:
    """Print a complete, commented hub.yaml with every default."""
    click.echo(example_config(), nl=False)


@config_group.command("show")
@config_option
def show(config_path: Path | None) -> None:
    """Print the effective configuration (file + HUB_* environment), secrets masked."""
    import yaml

    config = load_or_exit(config_path)
    data = config.model_dump(mode="json", by_alias=True)
    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


@config_group.command("reference")
def reference() -> None:
    """Print the configuration reference as Markdown (docs/configuration.md)."""
    click.echo(reference_markdown(), nl=False)
