"""`hub flash NAME --port P`, `hub firmware build NAME` and `hub firmware upload NAME`: put
ESPHome firmware on a node.

`hub firmware build` runs `esphome compile` on the node's YAML and records the factory image;
`hub firmware upload` sends a new build over the air (`esphome upload`) once a node is online;
`hub flash` writes that image (or `--image FILE`) over USB serial, verifies it, optionally hands
the node its Wi-Fi credentials over Improv, then follows its log until it is on the network.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from serial.serialutil import SerialException

from hub.config.base import parse_duration
from hub.provision.adoption import AdoptionError, AdoptionStore, FlashRecord
from hub.provision.firmware_build import BuildError, build_firmware
from hub.provision.flash import FlashError, flash_image
from hub.provision.improv import ImprovError, provision_wifi
from hub.provision.ota import default_host, upload_firmware
from hub.provision.serial_log import LogTimeoutError, follow_log

console = Console(stderr=True, highlight=False)


def _data_dir_option(func: Any) -> Any:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("hub-data"),
        envvar="HUB_DATA_DIR",
        show_default=True,
        help="Where the record of built and flashed nodes (adopted.json) lives.",
    )(func)


def _int_any_base(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number (e.g. 0x10000)") from None


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _store(data_dir: Path) -> AdoptionStore:
    return AdoptionStore(data_dir)


@click.command("flash")
@click.argument("name")
@click.option("-p", "--port", required=True, envvar="HUB_FLASH_PORT", help="Serial port.")
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Image to write [default: the factory image of NAME's last `hub firmware build`].",
)
@click.option(
    "--address",
    default="0x0",
    callback=_int_any_base,
    show_default=True,
    help="Flash offset (0x0 for a factory image, 0x10000 for an app image).",
)
@click.option("--baud", type=int, default=460800, show_default=True, help="Transfer baud rate.")
@click.option("--wifi-ssid", help="Send this Wi-Fi network to the node over Improv serial.")
@click.option(
    "--wifi-password",
    envvar="HUB_WIFI_PASSWORD",
    help="Wi-Fi password for --wifi-ssid (asked for when missing; env HUB_WIFI_PASSWORD).",
)
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="Watch the node's log until it reports Wi-Fi and MQTT or API connected.",
)
@click.option(
    "--log-timeout", default="90s", callback=_duration, show_default=True, help="How long to watch."
)
@click.option(
    "--before",
    type=click.Choice(["default-reset", "usb-reset", "no-reset"]),
    default="default-reset",
    show_default=True,
    help="How to put the chip into download mode (no-reset: you hold BOOT yourself).",
)
@click.option("--no-stub", is_flag=True, help="Talk to the ROM loader only (slower).")
@click.option("--force", is_flag=True, help="Do not check the image header (raw data).")
@click.option("--connect-attempts", type=int, default=7, show_default=True, hidden=True)
@_data_dir_option
def flash(
    name: str,
    port: str,
    image: Path | None,
    address: int,
    baud: int,
    wifi_ssid: str | None,
    wifi_password: str | None,
    follow: bool,
    log_timeout: float,
    before: str,
    no_stub: bool,
    force: bool,
    connect_attempts: int,
    data_dir: Path,
) -> None:
    """Flash node NAME over USB serial, verify it, and watch it join the network."""
    store = _store(data_dir)
    try:
        record = store.get(name)
    except AdoptionError as exc:
        raise click.ClickException(str(exc)) from None
    if image is None:
        if record is None or record.build is None:
            raise click.ClickException(
                f"No firmware built for {name} yet: run `hub firmware build {name}` "
                "or pass --image FILE"
            )
        image = Path(record.build.factory_image)
        if not image.is_file():
            raise click.ClickException(
                f"The factory image of {name}'s last build is gone ({image}): build again"
            )
    if wifi_ssid and wifi_password is None:
        wifi_password = click.prompt(
            f"Wi-Fi password for {wifi_ssid}",
            hide_input=True,
            err=True,
            default="",
            show_default=False,
        )
    data = image.read_bytes()
    console.print(f"Flashing {name}: {image} ({len(data):,} bytes) to {port} at {address:#x}")
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("Writing", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result = flash_image(
                port,
                data,
                address=address,
                baud=baud,
                before=before,
                stub=not no_stub,
                force=force,
                connect_attempts=connect_attempts,
                progress=progress,
            )
        except FlashError as exc:
            raise click.ClickException(str(exc)) from None
    note = " after falling back" if result.fell_back else ""
    console.print(
        f"[green]Flashed and verified[/] {result.chip_description}: {result.size:,} bytes, "
        f"MD5 {result.md5}, {result.baud} baud{note}, {result.seconds:.1f} s"
    )
    try:
        store.record_flash(
            name,
            FlashRecord(
                port=port,
                chip=result.chip,
                chip_description=result.chip_description,
                address=result.address,
                size=result.size,
                md5=result.md5,
                baud=result.baud,
                flashed_at=time.time(),
            ),
            wifi_ssid=wifi_ssid,
        )
    except (AdoptionError, OSError) as exc:
        console.print(f"[yellow]Flashed, but could not record it:[/] {exc}")
    secrets = [wifi_password] if wifi_password else []
    if wifi_ssid:
        try:
            sent = provision_wifi(port, wifi_ssid, wifi_password or "")
        except (ImprovError, ValueError, SerialException) as exc:
            raise click.ClickException(f"Flashed, but Wi-Fi provisioning failed: {exc}") from None
        urls = f" ({', '.join(sent.urls)})" if sent.urls else ""
        console.print(f"[green]Wi-Fi credentials for {wifi_ssid!r} accepted[/]{urls}")
    if not follow:
        return
    console.print(f"Watching {name}'s log on {port} (up to {log_timeout:.0f} s)...")
    try:
        joined = follow_log(
            port,
            timeout=log_timeout,
            secrets=secrets,
            on_line=lambda line: console.print(f"  {line}", markup=False),
        )
    except LogTimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    except SerialException as exc:
        raise click.ClickException(f"Flashed, but could not read the log: {exc}") from None
    links = [n for n, up in (("MQTT", joined.mqtt), ("API", joined.api)) if up]
    where = f" at {joined.ip}" if joined.ip else ""
    console.print(f"[green]{name} is online{where}[/]: Wi-Fi and {' and '.join(links)} connected")


@click.group("firmware")
def firmware() -> None:
    """Build ESPHome firmware for the nodes and update them over the air."""


@firmware.command("build")
@click.argument("name")
@click.option(
    "--firmware-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's ESPHome YAML [default: firmware/NAME.yaml].",
)
@click.option("--timeout", default="60m", callback=_duration, show_default=True)
@click.option("-v", "--verbose", is_flag=True, help="Show the compiler output as it runs.")
@_data_dir_option
def build(
    name: str, firmware_config: Path | None, timeout: float, verbose: bool, data_dir: Path
) -> None:
    """Compile NAME's firmware with ESPHome and record its factory image for `hub flash`."""
    config = firmware_config or Path("firmware") / f"{name}.yaml"
    console.print(f"Building {name} from {config} (the first build downloads the toolchain)...")

    def show(line: str) -> None:
        if verbose:
            console.print(f"  {line}", markup=False)

    try:
        result = build_firmware(name, config, timeout=timeout, on_line=show)
    except BuildError as exc:
        if exc.output_tail and not verbose:
            console.print(exc.output_tail, markup=False)
        raise click.ClickException(str(exc)) from None
    try:
        _store(data_dir).record_build(name, result.record(time.time()))
    except (AdoptionError, OSError) as exc:
        raise click.ClickException(f"Built {result.factory_image}, but: {exc}") from None
    chip = f" for {result.chip}" if result.chip else ""
    console.print(
        f"[green]Built[/] {result.factory_image}{chip}: {result.size:,} bytes, MD5 {result.md5} "
        f"({result.seconds:.0f} s). Next: hub flash {name} --port PORT"
    )


@firmware.command("upload")
@click.argument("name")
@click.option(
    "--device",
    "host",
    metavar="HOST_OR_IP",
    help="Where the node is on the network [default: NAME.local].",
)
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="App image to send (firmware.ota.bin) [default: ESPHome's last build of NAME].",
)
@click.option(
    "--firmware-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's ESPHome YAML [default: firmware/NAME.yaml]; secrets.yaml sits next to it.",
)
@click.option(
    "--timeout",
    default="10m",
    callback=_duration,
    show_default=True,
    help="Give up (and stop ESPHome) after this long.",
)
@_data_dir_option
def upload(
    name: str,
    host: str | None,
    image: Path | None,
    firmware_config: Path | None,
    timeout: float,
    data_dir: Path,
) -> None:
    """Update node NAME over the air (`esphome upload`) with its stored key."""
    config = firmware_config or Path("firmware") / f"{name}.yaml"
    target = host or default_host(name)
    console.print(f"Uploading {name} from {config} to {target} over the air...")
    shown = [-1]

    def show(line: str) -> None:
        console.print(f"  {line}", markup=False)

    def progress(percent: int) -> None:
        if percent // 10 > shown[0] // 10:  # every 10 %
            shown[0] = percent
            console.print(f"  Uploading: {percent}%", markup=False)

    try:
        result = upload_firmware(
            name,
            config,
            device=host,
            image=image,
            timeout=timeout,
            on_line=show,
            on_progress=progress,
        )
    except BuildError as exc:  # the output is already on screen (secrets masked)
        raise click.ClickException(str(exc)) from None
    try:
        _store(data_dir).record_upload(name, result.record(time.time()))
    except (AdoptionError, OSError) as exc:
        console.print(f"[yellow]Uploaded, but could not record it:[/] {exc}")
    console.print(f"[green]Updated {name}[/] at {result.device} ({result.seconds:.0f} s)")
