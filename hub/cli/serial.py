"""`hub serial`: list adapters, log an ESC port to MQTT, replay captures through the decoders."""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import orjson

from hub.cli.common import config_option, load_or_exit
from hub.derive.lipo import Chemistry, guess_cell_count
from hub.derive.rc import RcVehicleConfig
from hub.derive.vehicle import (
    VehicleConfig,
    final_drive_ratio,
    motor_rpm,
    speed_kmh,
    wheel_rpm,
)
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


# The CLI flag that sets each drivetrain value, for the live view's "speed: set ..." hint.
DRIVETRAIN_FLAGS = {
    "motor_poles": "--poles",
    "pinion_teeth": "--pinion",
    "spur_teeth": "--spur",
    "internal_ratio": "--internal-ratio",
    "tyre_diameter_mm": "--tyre-mm",
}


def find_vehicle(rc: Mapping[str, RcVehicleConfig], vehicle: str) -> RcVehicleConfig | None:
    """`derive.rc.<vehicle>`, else the entry whose ESC device is `vehicle`."""
    return rc.get(vehicle) or next((v for v in rc.values() if v.device == vehicle), None)


def vehicle_drivetrain(
    entry: RcVehicleConfig | None, overrides: Mapping[str, Any]
) -> VehicleConfig:
    """The configured drivetrain with the CLI overrides that were given applied (validated)."""
    base = entry.drivetrain.model_dump() if entry else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    return VehicleConfig.model_validate({**base, **given})


class LiveView:
    """The rich terminal view: latest values, per-cell estimate, speed, counters.

    Reads `logger.counters.latest` (written by the decoding thread) and derives what it shows
    from that snapshot only; it never touches the decoder.
    """

    def __init__(
        self,
        logger: Any,
        cells: int | None,
        vehicle: str,
        drivetrain: VehicleConfig | None = None,
        chemistry: Chemistry = "lipo",
    ) -> None:
        self.logger = logger
        self.cells = cells
        self.vehicle = vehicle
        self.drivetrain = drivetrain or VehicleConfig()
        self.chemistry: Chemistry = chemistry
        missing = self.drivetrain.missing_for_speed()
        self.speed_reason = (
            "set " + ", ".join(DRIVETRAIN_FLAGS[m] for m in missing) if missing else None
        )

    def speed(self, latest: Mapping[str, Any]) -> float | None:
        """km/h from the latest RPM (or eRPM and poles); None without full gearing or RPM."""
        cfg = self.drivetrain
        if (
            self.speed_reason is not None
            or cfg.pinion_teeth is None
            or cfg.spur_teeth is None
            or cfg.internal_ratio is None
            or cfg.tyre_diameter_mm is None
            or cfg.motor_poles is None
        ):
            return None
        rpm = _number(latest.get("rpm"))
        if rpm is None:
            erpm = _number(latest.get("erpm"))
            if erpm is None:
                return None
            rpm = motor_rpm(erpm, cfg.motor_poles)
        fdr = final_drive_ratio(cfg.spur_teeth, cfg.pinion_teeth, cfg.internal_ratio)
        return speed_kmh(wheel_rpm(abs(rpm), fdr), cfg.tyre_diameter_mm)

    def per_cell(self, latest: Mapping[str, Any]) -> str:
        volts = _number(latest.get("pack_voltage"))
        if not volts:
            return "-"
        if self.cells:
            return f"{volts / self.cells:.3f} V ({self.cells}S)"
        cells = guess_cell_count(volts, self.chemistry).count
        return f"{volts / cells:.3f} V ({cells}S?)" if cells else "-"

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs of the view, from the latest values."""
        latest = dict(self.logger.counters.latest)  # a snapshot: the decoder keeps writing
        stats = self.logger.framer.stats if self.logger.framer else None
        out: list[tuple[str, str]] = []

        def row(name: str, key: str, unit: str, fmt: str = "{:.2f}") -> None:
            value = _number(latest.get(key))
            out.append((name, "-" if value is None else fmt.format(value) + f" {unit}".rstrip()))

        row("pack voltage", "pack_voltage", "V")
        out.append(("per cell (est.)", self.per_cell(latest)))
        row("current", "current", "A")
        row("ESC temperature", "esc_temperature", "°C", "{:.0f}")
        row("motor temperature", "motor_temperature", "°C", "{:.0f}")
        row("eRPM", "erpm", "", "{:.0f}")
        row("RPM", "rpm", "", "{:.0f}")
        speed = self.speed(latest)
        if self.speed_reason is not None:
            out.append(("speed", self.speed_reason))
        else:
            out.append(("speed", "-" if speed is None else f"{speed:.1f} km/h"))
        row("throttle", "throttle", "%", "{:.0f}")
        c = self.logger.counters
        out.append(("frames", str(c.frames)))
        bad = sum(stats.bad.values()) if stats else 0
        out.append(("bad frames", f"{bad} ({dict(stats.bad) if stats else {}})"))
        out.append(("readings sent", str(c.readings)))
        return out

    def render(self) -> Any:
        from rich.table import Table

        table = Table(title=f"{self.vehicle} — {self.logger.protocol} @ {self.logger.baud} baud")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in self.rows():
            table.add_row(name, value)
        return table

    def line(self) -> str:
        latest = dict(self.logger.counters.latest)
        stats = self.logger.framer.stats if self.logger.framer else None
        keys = ("pack_voltage", "current", "esc_temperature", "motor_temperature", "erpm", "rpm")
        parts = [f"{k}={_fmt(latest[k])}" for k in keys if k in latest]
        speed = self.speed(latest)
        if speed is not None:
            parts.append(f"speed={speed:.1f}")
        elif self.speed_reason is not None:
            parts.append(f"speed: {self.speed_reason}")
        bad = sum(stats.bad.values()) if stats else 0
        return f"frames={self.logger.counters.frames} bad={bad} " + " ".join(parts)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


@serial_group.command("log")
@click.option("--port", required=True, help="Serial device or pyserial URL, e.g. /dev/ttyUSB0.")
@click.option("--baud", type=int, default=None, help="Default: the protocol's baud rate.")
@click.option("--protocol", type=PROTOCOL_CHOICE, default="auto", show_default=True)
@click.option("--vehicle", required=True, help="Device name; topic hub/readings/<vehicle>.")
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True)
@click.option("--poles", type=int, default=None, help="Motor poles, for mechanical RPM.")
@click.option("--pinion", type=int, default=None, help="Pinion teeth (overrides the config).")
@click.option("--spur", type=int, default=None, help="Spur teeth (overrides the config).")
@click.option("--internal-ratio", type=float, default=None, help="Diff/transmission ratio (overrides the config; no default).")  # fmt: skip
@click.option("--tyre-mm", type=float, default=None, help="Tyre diameter in mm (overrides the config).")  # fmt: skip
@click.option("--cells", type=int, default=None, help="Series cells (default: the config's pack, else estimated).")  # fmt: skip
@click.option("--capture-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("hub-data/captures"), show_default=True)  # fmt: skip
@click.option("--spool", type=click.Path(dir_okay=False, path_type=Path), default=Path("hub-data/serial-spool.jsonl"), show_default=True)  # fmt: skip
@click.option(
    "--vesc-rate", type=float, default=20.0, show_default=True, help="VESC polls per second."
)
@click.option("--publish-interval", type=float, default=0.05, show_default=True, help="Seconds between two MQTT messages; readings are batched in between.")  # fmt: skip
@click.option("--no-tui", is_flag=True, help="Plain log lines instead of the live view.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@config_option
def log_cmd(
    port: str, baud: int | None, protocol: str, vehicle: str, broker: str, poles: int | None,
    pinion: int | None, spur: int | None, internal_ratio: float | None, tyre_mm: float | None,
    cells: int | None, capture_dir: Path, spool: Path, vesc_rate: float, publish_interval: float,
    no_tui: bool, duration: float | None, config_path: Path | None,
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
    from pydantic import ValidationError

    config = load_or_exit(config_path)
    rc = config.derive.rc
    overrides = {
        "motor_poles": poles,
        "pinion_teeth": pinion,
        "spur_teeth": spur,
        "internal_ratio": internal_ratio,
        "tyre_diameter_mm": tyre_mm,
    }
    entry = find_vehicle(rc, vehicle)
    try:
        drivetrain = vehicle_drivetrain(entry, overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{DRIVETRAIN_FLAGS.get(str(e['loc'][0]), e['loc'][0]) if e['loc'] else ''}: {e['msg']}"
            for e in exc.errors()
        )
        raise click.UsageError(f"drivetrain of {vehicle}: {problems}") from None
    config_cells = entry.pack.cell_count if entry else None
    chemistry: Chemistry = entry.pack.chemistry if entry else "lipo"
    # The login and TLS of hub.yaml's broker section: with authentication on, a logger
    # without them is refused by the broker.
    publisher = SpoolingPublisher(
        broker, spool, client_id=f"hub-serial-{vehicle}", broker=config.broker
    )
    capture = CaptureWriter(capture_dir, protocol, baud or 0, port)
    logger = SerialLogger(
        port, vehicle, publisher.submit, protocol, baud, _settings(drivetrain.motor_poles), capture,
        vesc_poll_interval=1 / vesc_rate, publish_interval=publish_interval,
    )  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: logger.stop())
    publisher.start()
    try:
        logger.open()
    except (RuntimeError, ValueError, OSError) as exc:
        publisher.close(0)
        raise click.ClickException(str(exc)) from None
    view = LiveView(logger, cells or config_cells, vehicle, drivetrain, chemistry)
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
