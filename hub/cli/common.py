"""Pieces every command shares: the --config option and friendly config errors."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from hub.config import HubConfig
from hub.config.loader import ConfigError, load_config
from hub.times import parse_time

F = TypeVar("F", bound=Callable[..., Any])

err_console = Console(stderr=True)


def config_option(func: F) -> F:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="HUB_CONFIG",
        default=None,
        help="hub.yaml to use (default: ./hub.yaml when it exists, else the embedded defaults).",
    )(func)


def resolve_config_path(config_path: Path | None) -> Path | None:
    if config_path is not None:
        return config_path
    default = Path("hub.yaml")
    return default if default.exists() else None


def load_or_exit(
    config_path: Path | None, overrides: Mapping[tuple[str, ...], Any] | None = None
) -> HubConfig:
    try:
        return load_config(resolve_config_path(config_path), overrides=overrides)
    except ConfigError as exc:
        err_console.print(
            f"[bold red]Configuration error[/] ({len(exc.issues)} problem{'s' if len(exc.issues) > 1 else ''}):"
        )
        for issue in exc.issues:
            err_console.print(f"  {issue}", markup=False, highlight=False)
        sys.exit(2)


def parse_since(value: str, now: float | None = None) -> int:
    """'1h' (ago) or an ISO time -> Unix milliseconds (the web API reads times the same way)."""
    try:
        return parse_time(value, time.time() if now is None else now)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def store_path_or_exit(config: HubConfig) -> Path:
    path = config.store_path
    if not path.exists():
        err_console.print(
            f"No store at {path} yet: start the hub with 'hub run' first (data_dir: {config.data_dir})."
        )
        sys.exit(1)
    return path


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user's counts). 0 and below are not
    processes: os.kill would signal a whole process group."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
