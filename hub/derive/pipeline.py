"""All derivations of `hub run` behind one interface the ingest core calls.

Each batch of committed-to-be readings goes through the air-quality filters (AQI, NowCast,
corrections, comfort) and the RC model of each vehicle (LiPo, drivetrain, sessions). What
they derive is stored in the same transaction as the readings it came from; a drive session
that closes is written in that transaction too. `tick` advances time for filters that emit
on the clock (an hour closing, a session ending after its idle time); `close` ends what is
still open when the hub stops (a drive session in progress is stored, not lost).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from pydantic import Field

from hub.config.base import ConfigModel
from hub.derive.air import AirDerivers
from hub.derive.air_settings import AirSettings
from hub.derive.rc import RcDerivation, RcVehicleConfig
from hub.model import Reading
from hub.store.sessions import write_session

log = logging.getLogger(__name__)


class DeriveConfig(ConfigModel):
    """The `derive:` section: what the hub computes from the readings."""

    air: AirSettings = Field(
        default_factory=AirSettings, description="Air-quality indices per node."
    )
    rc: dict[str, RcVehicleConfig] = Field(
        default_factory=dict,
        description="RC vehicles by name: ESC device, pack, drivetrain, sessions.",
    )
    rc_auto: bool = Field(
        True,
        description="Give any device that reports pack_voltage and is not listed in rc a default pack and session model (no speed: gearing unknown).",
    )
    rc_max_vehicles: int = Field(
        64,
        ge=1,
        le=10000,
        description="Most vehicles modelled at once (auto-detected ones included).",
    )


@dataclass(slots=True)
class Derived:
    readings: list[Reading] = field(default_factory=list)
    writes: list[Callable[[sqlite3.Connection], None]] = field(default_factory=list)


class Derivations:
    def __init__(self, config: DeriveConfig) -> None:
        self.config = config
        self.air = AirDerivers(config.air)
        self.vehicles: dict[str, RcDerivation] = {
            name: RcDerivation(name, vc) for name, vc in config.rc.items()
        }
        self._rc_devices = {vc.device for vc in config.rc.values()} | {
            vc.cell_monitor for vc in config.rc.values() if vc.cell_monitor
        }
        self.sessions_closed = 0

    def _auto_vehicles(self, readings: Sequence[Reading]) -> None:
        for r in readings:
            if (
                r.metric == "pack_voltage"
                and r.device not in self._rc_devices
                and r.source != "derived"
            ):
                if len(self.vehicles) >= self.config.rc_max_vehicles:
                    return
                self.vehicles[r.device] = RcDerivation(r.device, RcVehicleConfig(device=r.device))
                self._rc_devices.add(r.device)
                log.info(
                    "Modelling %r as an RC vehicle (default pack and session settings)", r.device
                )

    def derive(self, readings: Sequence[Reading]) -> Derived:
        out = Derived()
        if not readings:
            return out
        out.readings.extend(self.air.feed_many(readings))
        if self.config.rc_auto:
            self._auto_vehicles(readings)
        if self.vehicles:
            by_device: dict[str, list[Reading]] = {}
            for r in readings:
                if r.device in self._rc_devices:
                    by_device.setdefault(r.device, []).append(r)
            if by_device:
                for vehicle in self.vehicles.values():
                    # One frame (instant) at a time: the pack model pairs voltage and current.
                    mine = [r for d in vehicle.devices for r in by_device.get(d, ())]
                    if not mine:
                        continue
                    for frame in _frames(mine):
                        result = vehicle.feed(frame)
                        out.readings.extend(result.readings)
                        self._close(result.sessions, out)
        return out

    def tick(self, now_ms: int) -> Derived:
        out = Derived(readings=self.air.advance(now_ms))
        for vehicle in self.vehicles.values():
            self._close(vehicle.tick(now_ms), out)
        return out

    def close(self) -> Derived:
        """The hub stops: close every open drive session, to be stored with the last commit."""
        out = Derived()
        for vehicle in self.vehicles.values():
            self._close(vehicle.close(), out)
        return out

    def _close(self, sessions: Sequence[object], out: Derived) -> None:
        for session in sessions:
            self.sessions_closed += 1
            out.writes.append(partial(write_session, session=session))  # type: ignore[arg-type]


def _frames(readings: list[Reading]) -> list[list[Reading]]:
    frames: dict[int, list[Reading]] = {}
    for r in readings:
        frames.setdefault(r.timestamp_ms, []).append(r)
    return [frames[ts] for ts in sorted(frames)]
