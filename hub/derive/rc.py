"""One RC vehicle's derivations wired together: pack -> drivetrain -> sessions.

`RcDerivation` takes the raw readings of the vehicle's ESC (and balance-lead monitor) and
returns the derived readings and the sessions that closed. The pack model runs first, so the
vehicle model gets its `energy_wh` for Wh/km and the session tracker sees speed, mAh, Wh and
cell voltages. Pure, like its parts; `service.py` keeps one per configured vehicle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import Field

from hub.config.base import ConfigModel
from hub.derive.lipo import LipoFilter, PackConfig
from hub.derive.session import Session, SessionConfig, SessionTracker
from hub.derive.vehicle import VehicleConfig, VehicleModel
from hub.model import Reading


class RcVehicleConfig(ConfigModel):
    """One RC vehicle: which devices report for it, its drivetrain, its pack, its sessions."""

    device: str = Field(default="esc0", description="Device name of the vehicle's ESC readings")
    cell_monitor: str | None = Field(
        default=None, description="Device name of a balance-lead monitor, if one is fitted"
    )
    drivetrain: VehicleConfig = Field(
        default_factory=lambda: VehicleConfig(),
        description="Gearing and tyre, for wheel RPM and speed.",
    )
    pack: PackConfig = Field(
        default_factory=lambda: PackConfig(),
        description="The LiPo pack: cells, capacity, chemistry.",
    )
    session: SessionConfig = Field(
        default_factory=lambda: SessionConfig(), description="When a drive session starts and ends."
    )


@dataclass(slots=True)
class RcOutput:
    readings: list[Reading] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)


class RcDerivation:
    def __init__(self, vehicle: str, config: RcVehicleConfig | None = None) -> None:
        self.vehicle = vehicle
        self.config = config or RcVehicleConfig()
        device = self.config.device
        tags = {"vehicle": vehicle}
        self.pack = LipoFilter(device, self.config.pack, tags)
        self.drivetrain = VehicleModel(device, self.config.drivetrain, tags)
        self.sessions = SessionTracker(vehicle, device, self.config.session)
        monitor = self.config.cell_monitor
        self.devices = {device} if monitor is None else {device, monitor}

    def feed(self, readings: Iterable[Reading]) -> RcOutput:
        """One batch (a decoded frame); readings of other devices are ignored."""
        mine = [r for r in readings if r.device in self.devices]
        if not mine:
            return RcOutput()
        derived = self.pack.feed(mine)
        derived += self.drivetrain.feed([*mine, *derived])
        # Where the pack model re-derived a raw metric (consumed_mah, unwrapped and kept
        # monotonic), the session uses its version only.
        rederived = {r.metric for r in derived}
        raw = [r for r in mine if r.device == self.config.device and r.metric not in rederived]
        closed = self.sessions.feed([*raw, *derived])
        return RcOutput(derived, closed)

    def tick(self, now_ms: int) -> list[Session]:
        return self.sessions.tick(now_ms)

    def close(self) -> list[Session]:
        """The hub stops: the open session ends with the last motion it saw."""
        return self.sessions.close()
