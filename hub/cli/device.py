"""`hub device`: give each device its own secrets and a least-privilege MQTT login.

    hub device add airq-kitchen --kind airq
    hub device list
    hub device rotate airq-kitchen
    hub device remove airq-kitchen --broker mqtt://127.0.0.1:1883

No command prints a secret: they go to the secrets file, which node configs read with `!secret`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hub.provision.devices import (
    KINDS,
    ROTATABLE,
    DeviceError,
    DeviceRegistry,
    Paths,
    signal_reload,
)
from hub.provision.secrets import secret_keys


class _Reloader:
    """Signals Mosquitto after the broker files changed, and remembers what to tell the user."""

    def __init__(self, pid_file: Path | None) -> None:
        self.pid_file = pid_file
        self.pid: int | None = None
        self.changed = False
        self.error: str | None = None

    def __call__(self) -> None:
        self.changed = True
        if self.pid_file is None:
            return
        try:
            self.pid = signal_reload(self.pid_file)
        except DeviceError as exc:
            self.error = str(exc)

    def report(self, paths: Paths) -> None:
        if not self.changed:
            return
        if self.pid is not None:
            click.echo(
                f"Signalled Mosquitto (pid {self.pid}) to reload {paths.passwd_file} "
                f"and {paths.acl_file}."
            )
        elif self.error is not None:
            raise click.ClickException(
                f"broker files updated, but {self.error}. Reload Mosquitto by hand "
                "(systemctl reload mosquitto, or kill -HUP its pid)."
            )
        else:
            click.echo(
                f"Updated {paths.passwd_file} and {paths.acl_file}: reload Mosquitto to apply "
                "(systemctl reload mosquitto, or kill -HUP its pid; --mosquitto-pid-file does it)."
            )


def _registry_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=Path("hub-data"),
            envvar="HUB_DATA_DIR",
            show_default=True,
            help="Where the registry, secrets and broker files live.",
        ),
        click.option(
            "--secrets-file",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="HUB_SECRETS_FILE",
            help="Firmware secrets file for ESPHome's !secret [DATA_DIR/secrets.yaml].",
        ),
        click.option(
            "--passwd-file",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="HUB_MOSQUITTO_PASSWD_FILE",
            help="Mosquitto password_file [DATA_DIR/mosquitto/passwd].",
        ),
        click.option(
            "--acl-file",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="HUB_MOSQUITTO_ACL_FILE",
            help="Mosquitto acl_file [DATA_DIR/mosquitto/acl].",
        ),
        click.option(
            "--hub-credentials-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="The hub's own MQTT login [DATA_DIR/hub-mqtt.yaml].",
        ),
        click.option(
            "--hub-user",
            default="hub",
            show_default=True,
            help="MQTT user name of the hub itself.",
        ),
        click.option(
            "--mosquitto-pid-file",
            type=click.Path(dir_okay=False, path_type=Path),
            envvar="HUB_MOSQUITTO_PID_FILE",
            help="Send SIGHUP to this Mosquitto after the broker files change.",
        ),
    ]
    for option in reversed(options):
        func = option(func)

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        paths = Paths.under(
            kwargs.pop("data_dir"),
            secrets_file=kwargs.pop("secrets_file"),
            passwd_file=kwargs.pop("passwd_file"),
            acl_file=kwargs.pop("acl_file"),
            hub_credentials_file=kwargs.pop("hub_credentials_file"),
        )
        reloader = _Reloader(kwargs.pop("mosquitto_pid_file"))
        try:
            registry = DeviceRegistry(paths, hub_username=kwargs.pop("hub_user"), reload=reloader)
            result = func(registry=registry, **kwargs)
        except (DeviceError, ValueError) as exc:
            reloader.report(paths)
            raise click.ClickException(str(exc)) from None
        reloader.report(paths)
        return result

    return wrapper


@click.group("device")
def device() -> None:
    """Device identities: API key, OTA password and a least-privilege MQTT login each."""


@device.command("add")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default="airq",
    show_default=True,
    help="airq: an ESPHome air-quality node; rc-bridge: also publishes hub/readings/NAME.",
)
@_registry_options
def add(registry: DeviceRegistry, name: str, kind: str) -> None:
    """Make secrets and an MQTT login for the ESPHome node NAME."""
    registry.add(name, kind)  # type: ignore[arg-type]
    keys = secret_keys(name)
    click.echo(f"Added {name} ({kind}): secrets in {registry.paths.secrets_file}.")
    click.echo(
        "In the node's YAML (see firmware/README.md; secrets.yaml must sit next to it):\n"
        "  substitutions:\n"
        f"    node_name: {name}\n"
        f"    api_key: !secret {keys['api_key']}\n"
        f"    mqtt_password: !secret {keys['mqtt_password']}\n"
        f"Also there: {keys['mqtt_username']} and {keys['ota_password']} "
        "(for ota: password:)."
    )


@device.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_registry_options
def list_devices(registry: DeviceRegistry, as_json: bool) -> None:
    """Registered devices (no secrets)."""
    devices = registry.devices()
    if as_json:
        rows = [{"name": d.name, **d.to_json(), "mqtt_username": d.name} for d in devices]
        click.echo(json.dumps(rows, indent=2))
        return
    if not devices:
        click.echo("No devices yet: hub device add NAME --kind airq")
        return
    click.echo(f"{'NAME':<24} {'KIND':<10} {'MQTT USER':<24} {'ADDED':<21} ROTATED")
    for d in devices:
        click.echo(f"{d.name:<24} {d.kind:<10} {d.name:<24} {d.added:<21} {d.rotated or '-'}")
    click.echo(
        f"Hub user: {registry.hub_username} (login in {registry.paths.hub_credentials_file})"
    )


@device.command("remove")
@click.argument("name")
@click.option(
    "--broker",
    "broker_url",
    help="Also clear NAME's retained HA discovery on this broker (mqtt://host:port), as the hub user.",
)
@click.option(
    "--settle",
    type=float,
    default=0.5,
    show_default=True,
    help="Seconds without a new retained message before clearing.",
)
@_registry_options
def remove(registry: DeviceRegistry, name: str, broker_url: str | None, settle: float) -> None:
    """Revoke NAME's MQTT login and forget its secrets."""
    # The TLS settings (broker.tls: ca_file, client certificate) come from hub.yaml, if any.
    from hub.cli.common import load_or_exit, resolve_config_path

    config_path = resolve_config_path(None)
    broker = load_or_exit(config_path).broker if config_path is not None else None
    cleared = registry.remove(name, broker_url=broker_url, settle=settle, broker=broker)
    click.echo(f"Removed {name}: its MQTT login, ACL and secrets are gone.")
    if broker_url is not None:
        click.echo(f"Cleared {len(cleared)} retained discovery topic(s) of {name} on {broker_url}.")


@device.command("rotate")
@click.argument("name")
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(sorted(ROTATABLE)),
    help="Rotate just these (repeatable); default: api, ota and mqtt.",
)
@_registry_options
def rotate(registry: DeviceRegistry, name: str, only: tuple[str, ...]) -> None:
    """New secrets for NAME (or for the hub's own login when NAME is the hub user)."""
    parts = frozenset(only) or ROTATABLE
    registry.rotate(name, parts)
    if name == registry.hub_username:
        click.echo(
            f"Rotated the hub's MQTT password: in {registry.paths.hub_credentials_file}; "
            "restart the hub with it."
        )
        return
    click.echo(
        f"Rotated {', '.join(sorted(parts))} of {name}: new values in {registry.paths.secrets_file}."
    )
    click.echo(
        "Re-flash the node with them (OTA needs the OTA password the node runs now: "
        "rotate ota only when you can flash over serial)."
    )
    if "mqtt" in parts:
        click.echo("Its old MQTT password stops working once Mosquitto reloads.")


@device.command("sync")
@_registry_options
def sync(registry: DeviceRegistry) -> None:
    """Rewrite the password and ACL files from the registry (after a hand edit or a crash)."""
    registry.sync()
    click.echo(f"{len(registry.devices())} device(s) in step.")


if __name__ == "__main__":
    device(prog_name="hub device")
