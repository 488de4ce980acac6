"""`hub simulate --esphome-api` / `esphome-sim`: simulated ESPHome nodes on the native API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import signal

import click

from hub.sources.esphome_sim import SimulatorFleet


def _decode_key(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
    if value is None:
        return None
    if value == "random":
        return os.urandom(32)
    try:
        key = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise click.BadParameter(
            "not base64; use `api: encryption: key:` format or 'random'"
        ) from None
    if len(key) != 32:
        raise click.BadParameter(f"decodes to {len(key)} bytes, a Noise key is 32")
    return key


@click.command("esphome-sim")
@click.option(
    "--devices",
    "count",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="How many nodes (named <prefix>-1 .. <prefix>-N).",
)
@click.option(
    "--port-base",
    type=click.IntRange(0, 65535),
    default=6053,
    show_default=True,
    help="Port of the first node; the others follow (0: free ports).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--noise-key",
    callback=_decode_key,
    metavar="KEY",
    help="Encrypt with this base64 32-byte key ('random' makes one); plaintext without.",
)
@click.option(
    "--rate",
    type=click.FloatRange(0.01, 1000),
    default=1.0,
    show_default=True,
    help="Sensor states per second per node.",
)
@click.option("--prefix", default="airq-sim", show_default=True, help="Node name prefix.")
@click.option(
    "--run-for",
    type=click.FloatRange(0),
    default=None,
    hidden=True,
    help="Stop after this many seconds (tests).",
)
def esphome_sim(
    count: int,
    port_base: int,
    host: str,
    noise_key: bytes | None,
    rate: float,
    prefix: str,
    run_for: float | None,
) -> None:
    """Run simulated ESPHome air-quality nodes that speak the native API (Ctrl-C stops)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if port_base and port_base + count - 1 > 65535:
        raise click.BadParameter(
            f"{count} nodes from port {port_base} run past 65535", param_hint="--port-base"
        )
    asyncio.run(_run(count, port_base, host, noise_key, rate, prefix, run_for))


async def _run(
    count: int,
    port_base: int,
    host: str,
    key: bytes | None,
    rate: float,
    prefix: str,
    run_for: float | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with SimulatorFleet(
            count, port_base=port_base, host=host, noise_psk=key, rate=rate, prefix=prefix
        ) as fleet:
            if key is not None:
                click.echo(f"encryption key: {base64.b64encode(key).decode()}")
            for device in fleet.devices:
                click.echo(f"{device.name} {device.host}:{device.port}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), run_for)
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}") from None


if __name__ == "__main__":
    esphome_sim()
