"""`hub serial`: list adapters, log an ESC port to MQTT, replay captures through the decoders."""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click
import orjson

from hub.sources.serial.settings import PROTOCOLS, EscSettings

PROTOCOL_CHOICE = click.Choice(["auto", *PROTOCOLS])


@click.group("serial")
def serial_group() -> None:
    """ESC telemetry over a serial port (KISS/AM32, Hobbywing, VESC, ESP32 bridge)."""


@serial_group.command("ports")
@click.option("--all", "include_all", is_flag=True, help="Also list non-USB serial ports.")
def ports_cmd(include_all: bool) -> None:
    """List USB serial adapters with VID:PID and the bridge chip."""
    from hub.sources.serial.ports import list_ports

    found = list_ports(include_all)
    if not found:
        click.echo("no USB serial adapters found")
        return
    click.echo(f"{'device':<22} {'VID:PID':<10} {'chip':<24} description")
    for p in found:
        click.echo(f"{p.device:<22} {p.vid_pid:<10} {p.chip:<24} {p.description}")


def _settings(poles: int | None, config: dict[str, Any] | None = None) -> EscSettings:
    data = dict(config or {})
    if poles is not None:
        data["motor_poles"] = poles
    return EscSettings(**data)


@serial_group.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--protocol", type=PROTOCOL_CHOICE, default="auto", show_default=True)
@click.option("--speed", default=None, help="Pace like the recording, e.g. 1x, 10x (default: max).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per decoded frame.")
@click.option("--poles", type=int, default=None, help="Motor poles, for mechanical RPM.")
def replay_cmd(
    file: Path, protocol: str, speed: str | None, as_json: bool, poles: int | None
) -> None:
    """Decode a hub capture file or a Saleae async-serial CSV export."""
    from hub.sources.serial.readings import frame_json
    from hub.sources.serial.replay import parse_speed, replay

    settings = _settings(poles)
    try:
        state, frames = replay(
            file, None if protocol == "auto" else protocol, settings, parse_speed(speed)
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    count = 0
    out = sys.stdout.buffer
    for decoded in frames:
        count += 1
        obj = frame_json(decoded, settings)
        if as_json:
            out.write(orjson.dumps(obj) + b"\n")
        else:
            fields = " ".join(
                f"{k}={_fmt(v)}" for k, v in obj.items() if k not in ("protocol", "t")
            )
            out.write(f"{decoded.t:12.6f} {decoded.protocol} {fields}\n".encode())
    out.flush()
    stats = state.stats
    summary = {
        "file": str(file),
        "protocol": state.protocol,
        "detected": state.detected is not None,
        "frames": count,
        "bytes": stats.bytes,
        "skipped_bytes": stats.skipped_bytes,
        "bad": dict(stats.bad),
        "bad_rows": state.meta.bad_rows,
    }
    click.echo(orjson.dumps(summary).decode() if as_json else _summary(summary), err=True)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _summary(s: dict[str, Any]) -> str:
    bad = ", ".join(f"{k}={v}" for k, v in s["bad"].items()) or "none"
    how = "detected" if s["detected"] else "given"
    return (
        f"{s['file']}: {s['frames']} frames ({s['protocol']}, {how}), {s['bytes']} bytes, "
        f"{s['skipped_bytes']} skipped, bad frames: {bad}"
    )


class LiveView:
    """The rich terminal view: latest values, per-cell estimate, counters."""

    def __init__(self, logger: Any, cells: int | None, vehicle: str) -> None:
        self.logger = logger
        self.cells = cells
        self.vehicle = vehicle

    def render(self) -> Any:
        from rich.table import Table

        latest = self.logger.counters.latest
        stats = self.logger.framer.stats if self.logger.framer else None
        table = Table(title=f"{self.vehicle} — {self.logger.protocol} @ {self.logger.baud} baud")
        table.add_column("metric")
        table.add_column("value", justify="right")

        def row(name: str, key: str, unit: str, fmt: str = "{:.2f}") -> None:
            value = latest.get(key)
            table.add_row(name, "-" if value is None else fmt.format(value) + f" {unit}")

        row("pack voltage", "pack_voltage", "V")
        volts = latest.get("pack_voltage")
        cells = self.cells or (math.ceil(volts / 4.3) if volts else None)
        table.add_row(
            "per cell (est.)",
            f"{volts / cells:.3f} V ({cells}S{'' if self.cells else '?'})"
            if volts and cells
            else "-",
        )
        row("current", "current", "A")
        row("ESC temperature", "esc_temperature", "°C", "{:.0f}")
        row("motor temperature", "motor_temperature", "°C", "{:.0f}")
        row("eRPM", "erpm", "", "{:.0f}")
        row("RPM", "rpm", "", "{:.0f}")
        row("speed", "speed", "km/h", "{:.1f}")
        row("throttle", "throttle", "%", "{:.0f}")
        c = self.logger.counters
        table.add_row("frames", str(c.frames))
        bad = sum(stats.bad.values()) if stats else 0
        table.add_row("bad frames", f"{bad} ({dict(stats.bad) if stats else {}})")
        table.add_row("readings sent", str(c.readings))
        return table

    def line(self) -> str:
        latest = self.logger.counters.latest
        stats = self.logger.framer.stats if self.logger.framer else None
        keys = ("pack_voltage", "current", "esc_temperature", "motor_temperature", "erpm", "rpm")
        parts = [f"{k}={_fmt(latest[k])}" for k in keys if k in latest]
        bad = sum(stats.bad.values()) if stats else 0
        return f"frames={self.logger.counters.frames} bad={bad} " + " ".join(parts)


@serial_group.command("log")
@click.option("--port", required=True, help="Serial device or pyserial URL, e.g. /dev/ttyUSB0.")
@click.option("--baud", type=int, default=None, help="Default: the protocol's baud rate.")
@click.option("--protocol", type=PROTOCOL_CHOICE, default="auto", show_default=True)
@click.option("--vehicle", required=True, help="Device name; topic hub/readings/<vehicle>.")
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("--poles", type=int, default=None, help="Motor poles, for mechanical RPM.")
@click.option("--cells", type=int, default=None, help="Series cells (default: estimated).")
@click.option("--capture-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("hub-data/captures"), show_default=True)  # fmt: skip
@click.option("--spool", type=click.Path(dir_okay=False, path_type=Path), default=Path("hub-data/serial-spool.jsonl"), show_default=True)  # fmt: skip
@click.option(
    "--vesc-rate", type=float, default=20.0, show_default=True, help="VESC polls per second."
)
@click.option("--publish-interval", type=float, default=0.05, show_default=True, help="Seconds between two MQTT messages; readings are batched in between.")  # fmt: skip
@click.option("--no-tui", is_flag=True, help="Plain log lines instead of the live view.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
def log_cmd(
    port: str, baud: int | None, protocol: str, vehicle: str, broker: str, poles: int | None,
    cells: int | None, capture_dir: Path, spool: Path, vesc_rate: float, publish_interval: float,
    no_tui: bool, duration: float | None,
) -> None:  # fmt: skip
    """Read an ESC telemetry port, publish readings to MQTT (spooled when offline), capture raw."""
    from hub.bus.hub_json import check_device
    from hub.sources.serial.capture import CaptureWriter
    from hub.sources.serial.logger import SerialLogger
    from hub.sources.serial.spool import SpoolingPublisher

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    check_device(vehicle)
    publisher = SpoolingPublisher(broker, spool, client_id=f"hub-serial-{vehicle}")
    capture = CaptureWriter(capture_dir, protocol, baud or 0, port)
    logger = SerialLogger(
        port, vehicle, publisher.submit, protocol, baud, _settings(poles), capture,
        vesc_poll_interval=1 / vesc_rate, publish_interval=publish_interval,
    )  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: logger.stop())
    publisher.start()
    try:
        logger.open()
    except (RuntimeError, ValueError, OSError) as exc:
        publisher.close(0)
        raise click.ClickException(str(exc)) from None
    view = LiveView(logger, cells, vehicle)
    runner = threading.Thread(target=logger.run, args=(duration,), name="serial-decode")
    runner.start()
    try:
        if no_tui:
            while runner.is_alive():
                runner.join(1.0)
                click.echo(view.line())
        else:
            from rich.live import Live

            with Live(view.render(), refresh_per_second=4) as live:
                while runner.is_alive():
                    runner.join(0.25)
                    live.update(view.render())
    except KeyboardInterrupt:
        pass
    finally:
        logger.stop()
        runner.join(5)
        logger.close()
        publisher.close(drain_timeout=2.0)
        pending = publisher.spool.pending_bytes()
        if pending:
            click.echo(
                f"{pending} bytes still spooled in {spool}; they go out on the next run", err=True
            )


if __name__ == "__main__":  # `python -m hub.cli.serial ...` until `hub serial` is registered
    serial_group(prog_name="hub serial")
