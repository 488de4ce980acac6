"""The `hub` command. Each area keeps its commands in its own module here; this file only
lists them, so `hub --help` shows everything and a newcomer finds each command by name."""

from __future__ import annotations

import importlib

import click

from hub import __version__

# name -> "module:attribute". Imported lazily so `hub serial ports` does not load FastAPI.
COMMANDS: dict[str, str] = {
    "run": "hub.cli.run:run",
    "status": "hub.cli.status:status",
    "query": "hub.cli.status:query",
    "config": "hub.cli.config_cmd:config_group",
    "simulate": "hub.cli.simulate:simulate",
    "sessions": "hub.cli.sessions:sessions",
    "device": "hub.cli.device:device",
    "flash": "hub.cli.flash:flash",
    "firmware": "hub.cli.flash:firmware",
    "serial": "hub.cli.serial:serial_group",
    "esphome-sim": "hub.cli.simulate_esphome:esphome_sim",
    "deadletters": "hub.cli.deadletters:deadletters",
    "influx": "hub.cli.influx:influx",
    "alerts": "hub.cli.alerts:alerts",
    "web": "hub.cli.web:web",
    "store": "hub.cli.store:store_group",
    "backup": "hub.cli.ops:backup",
    "restore": "hub.cli.ops:restore",
    "migrate": "hub.cli.ops:migrate",
    "install-service": "hub.cli.install_service:install_service",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, attr = COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hub")
def cli() -> None:
    """Telemetry hub: ESPHome air-quality nodes and RC ESC/LiPo telemetry, stored and alerting."""


def main() -> None:
    from hub.store.sqlite import StoreError

    try:
        cli(prog_name="hub")
    except StoreError as exc:  # a damaged, foreign or newer store: say what to do, no traceback
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(4) from None
