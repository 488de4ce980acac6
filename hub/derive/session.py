"""Drive sessions: from the first turn of the motor to the last, with the numbers of the run.

A session starts at the first sample where the motor turns (rpm, erpm or current above its
threshold) and ends once nothing has turned for `idle_timeout`; its end time is the last
sample that turned. Readings up to the moment it closes still count (an ESC or motor is
often hottest a minute after the car stopped). Runs shorter than `min_duration` (a blip of
throttle on the bench) are dropped and counted in `discarded`.

Pure: the clock is the readings' timestamps, or `tick(now_ms)` when readings stop coming
(the ESC is unplugged), so a test drives it without waiting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import Field

from hub.config.base import ConfigModel, Duration
from hub.model import Reading


class SessionConfig(ConfigModel):
    """When a drive session starts and ends."""

    start_rpm: float = Field(default=300.0, ge=0, description="Motor RPM that counts as moving")
    start_erpm: float = Field(
        default=1000.0, ge=0, description="Electrical RPM that counts as moving"
    )
    start_current_a: float = Field(default=3.0, ge=0, description="Current that counts as moving")
    idle_timeout: Duration = Field(default=60.0, description="Stillness that ends a session")
    min_duration: Duration = Field(default=3.0, description="Shorter sessions are dropped")
    load_current_a: float = Field(
        default=5.0, ge=0, description="Current above which a cell voltage counts as under load"
    )


@dataclass(frozen=True, slots=True)
class Session:
    """One drive session. Values the ESC never reported are None, not 0."""

    id: str
    vehicle: str
    device: str
    start_ms: int
    end_ms: int
    max_speed_kmh: float | None = None
    max_current_a: float | None = None
    min_cell_voltage_load: float | None = None
    peak_esc_temperature: float | None = None
    peak_motor_temperature: float | None = None
    peak_pack_temperature: float | None = None
    consumed_mah: float | None = None
    energy_wh: float | None = None
    distance_km: float | None = None

    @property
    def duration_s(self) -> float:
        return (self.end_ms - self.start_ms) / 1000.0


def session_id(vehicle: str, start_ms: int) -> str:
    """`buggy-20241122T101530Z`: readable, sortable, unique per vehicle and start second."""
    start = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    return f"{vehicle}-{start:%Y%m%dT%H%M%SZ}"


_PEAKS = {
    "speed": "max_speed_kmh",
    "current": "max_current_a",
    "esc_temperature": "peak_esc_temperature",
    "motor_temperature": "peak_motor_temperature",
    "pack_temperature": "peak_pack_temperature",
}
_COUNTERS = {"consumed_mah": "consumed_mah", "energy_wh": "energy_wh", "distance": "distance_km"}


class _Run:
    """Figures of the open session, collected sample by sample."""

    def __init__(self, start_ms: int, baselines: dict[str, float]) -> None:
        self.start_ms = start_ms
        self.last_motion_ms = start_ms
        self.peaks: dict[str, float] = {}
        self.min_cell_load: float | None = None
        # Counter values carried over from before the start (the last ones seen while idle).
        self.prev: dict[str, float] = dict(baselines)
        self.used: dict[str, float] = {}

    def take(self, metric: str, value: float, under_load: bool) -> None:
        if metric in _PEAKS:
            field = _PEAKS[metric]
            value = abs(value) if metric == "speed" else value
            self.peaks[field] = max(self.peaks.get(field, value), value)
        elif metric in _COUNTERS:
            prev = self.prev.get(metric, value)
            # A counter that went back restarted (new pack, ESC reboot): it counts from 0.
            delta = value - prev if value >= prev else value
            self.used[_COUNTERS[metric]] = self.used.get(_COUNTERS[metric], 0.0) + delta
            self.prev[metric] = value
        elif metric in ("cell_voltage_min", "cell_voltage_avg") and under_load:
            low = self.min_cell_load
            self.min_cell_load = value if low is None else min(low, value)


class SessionTracker:
    """Cuts one vehicle's stream of readings into drive sessions.

    `feed(readings)` and `tick(now_ms)` return the sessions that closed; `current` shows
    the open one so far. Feed it the raw readings and the derived ones (speed, energy_wh,
    consumed_mah, cell_voltage_min) of the vehicle's device.
    """

    def __init__(self, vehicle: str, device: str, config: SessionConfig | None = None) -> None:
        self.vehicle = vehicle
        self.device = device
        self.config = config or SessionConfig()
        self.discarded = 0
        self._run: _Run | None = None
        self._baselines: dict[str, float] = {}  # last counter values seen while idle
        self._current_a: float | None = None

    @property
    def active(self) -> bool:
        return self._run is not None

    @property
    def current(self) -> Session | None:
        return None if self._run is None else self._snapshot(self._run)

    def feed(self, readings: Iterable[Reading]) -> list[Session]:
        closed: list[Session] = []
        batch = sorted(
            (r for r in readings if math.isfinite(r.value)), key=lambda r: r.timestamp_ms
        )
        i = 0
        while i < len(batch):  # one instant at a time: motion is judged per frame
            ts = batch[i].timestamp_ms
            j = i
            while j < len(batch) and batch[j].timestamp_ms == ts:
                j += 1
            closed.extend(self._instant(ts, batch[i:j]))
            i = j
        return closed

    def tick(self, now_ms: int) -> list[Session]:
        """Close the open session if it has been still for `idle_timeout` by `now_ms`."""
        run = self._run
        if run is None or now_ms - run.last_motion_ms < self.config.idle_timeout * 1000:
            return []
        return self._close()

    def close(self) -> list[Session]:
        """Close the open session now (the hub stops)."""
        return self._close() if self._run is not None else []

    def _moving(self, metric: str, value: float) -> bool:
        cfg = self.config
        if metric == "rpm":
            return abs(value) >= cfg.start_rpm
        if metric == "erpm":
            return abs(value) >= cfg.start_erpm
        if metric == "current":
            return value >= cfg.start_current_a
        return False

    def _instant(self, ts: int, readings: list[Reading]) -> list[Session]:
        closed = self.tick(ts)
        for r in readings:
            if r.metric == "current":
                self._current_a = r.value
        moving = any(self._moving(r.metric, r.value) for r in readings)
        if moving and self._run is None:
            self._run = _Run(ts, self._baselines)
        run = self._run
        if run is None:
            for r in readings:
                if r.metric in _COUNTERS:
                    self._baselines[r.metric] = r.value
            return closed
        if moving:
            run.last_motion_ms = ts
        under_load = self._current_a is not None and self._current_a >= self.config.load_current_a
        if self._current_a is None:
            under_load = moving  # no current sensor: a turning motor is the load
        for r in readings:
            run.take(r.metric, r.value, under_load)
        return closed

    def _snapshot(self, run: _Run) -> Session:
        figures = run.peaks | run.used
        return Session(
            session_id(self.vehicle, run.start_ms),
            self.vehicle,
            self.device,
            run.start_ms,
            run.last_motion_ms,
            max_speed_kmh=figures.get("max_speed_kmh"),
            max_current_a=figures.get("max_current_a"),
            min_cell_voltage_load=run.min_cell_load,
            peak_esc_temperature=figures.get("peak_esc_temperature"),
            peak_motor_temperature=figures.get("peak_motor_temperature"),
            peak_pack_temperature=figures.get("peak_pack_temperature"),
            consumed_mah=figures.get("consumed_mah"),
            energy_wh=figures.get("energy_wh"),
            distance_km=figures.get("distance_km"),
        )

    def _close(self) -> list[Session]:
        run = self._run
        assert run is not None
        self._run = None
        self._baselines = dict(run.prev)
        session = self._snapshot(run)
        if session.duration_s < self.config.min_duration:
            self.discarded += 1
            return []
        return [session]
