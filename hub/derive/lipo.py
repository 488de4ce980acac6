"""LiPo pack model: cell count, per-cell voltage, sag, internal resistance, charge used,
remaining charge and storage check, from ESC telemetry and an optional balance-lead monitor.

Facts from specs/esc-telemetry.md §6: full 4.20 V/cell (LiHV 4.35), storage 3.80-3.90 V/cell,
"3.20 V under load is about 3.5-3.6 V at rest", cell count `ceil(V / 4.3)` as Betaflight does,
with a user override because a voltage can fit two cell counts. The rules and their
assumptions are written out in README_rc.md beside this file.

Pure: values and timestamps in, derived `Reading`s out; `LipoFilter` keeps the state of one
pack on one device.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from hub.config.base import ConfigModel, Duration
from hub.derive.rc_readings import (
    DERIVED,
    OUT_OF_RANGE,
    TIME_BACKWARDS,
    Integrator,
    checked,
    derived_reading,
)
from hub.model import Reading

Chemistry = Literal["lipo", "lihv"]

FULL_CELL_V: Mapping[Chemistry, float] = {"lipo": 4.20, "lihv": 4.35}
# Betaflight detects cells with 4.30 V/cell for LiPo (full + 0.10 V); LiHV gets the same margin.
DETECT_MAX_MARGIN_V = 0.10
# Lowest per-cell voltage a pack plausibly rests at when it is plugged in ("3.20 V under load
# is about 3.5-3.6 V at rest": 3.30 leaves room for a pack driven a little too far).
DETECT_MIN_REST_CELL_V = 3.30
# Once locked, a resting voltage this far above the top of the band means more cells.
REDETECT_MARGIN_V = 0.20
NO_PACK_V = 2.5  # below this there is no pack on the ESC (or the ESC reads nothing)
MAX_CELLS = 14
STORAGE_LOW_V, STORAGE_HIGH_V = 3.80, 3.90
STORAGE_TOLERANCE_V = 0.05  # the ladder flags storage outside 3.75-3.95 V
COUNTER_WRAP = 65536  # KISS/AM32 send mAh as u16
COUNTER_WRAP_MARGIN = 2000

# Resting voltage per cell -> charge %, standard LiPo. Anchored on the spec's points (4.20 V
# full, 3.80-3.90 V = 40-50 %, 3.5-3.6 V at rest = the safe end); the points between follow
# the usual shape of a LiPo discharge curve [INFERRED]. Strictly increasing in both columns.
LIPO_REST_CURVE: tuple[tuple[float, float], ...] = (
    (3.50, 0.0),
    (3.60, 8.0),
    (3.70, 20.0),
    (3.75, 30.0),
    (3.80, 40.0),
    (3.90, 50.0),
    (4.00, 65.0),
    (4.10, 82.0),
    (4.20, 100.0),
)


class PackConfig(ConfigModel):
    """The battery pack on one RC device."""

    chemistry: Chemistry = Field(
        default="lipo",
        description="lipo (full at 4.20 V/cell) or lihv (high-voltage LiPo, 4.35 V/cell)",
    )
    capacity_mah: float | None = Field(
        default=None, gt=0, le=100_000, description="Pack capacity in mAh; enables coulomb counting"
    )
    cell_count: int | None = Field(
        default=None, ge=1, le=MAX_CELLS, description="Series cell count; unset = detect at rest"
    )
    rest_current_a: float = Field(
        default=1.0, ge=0, le=50, description="Below this current the pack counts as resting"
    )
    rest_settle: Duration = Field(
        default=30.0, description="Continuous rest before a resting voltage updates remaining %"
    )
    ir_min_step_a: float = Field(
        default=5.0,
        gt=0,
        description="Smallest current step used for the internal-resistance estimate",
    )
    ir_max_step: Duration = Field(
        default=0.5, description="Longest time between the two samples of a resistance step"
    )
    pairing_window: Duration = Field(
        default=2.0, description="How old a value may be and still pair with a newer one (V with I)"
    )
    max_gap: Duration = Field(
        default=2.0, description="Longest gap between samples that mAh and Wh integration bridges"
    )
    new_pack_rise_v: float = Field(
        default=0.30, gt=0, description="Rise of the settled resting V/cell that means another pack"
    )


@dataclass(frozen=True, slots=True)
class CellCountGuess:
    """The outcome of cell-count detection. `note` says why, in a sentence for the user."""

    count: int | None
    candidates: tuple[int, ...]
    ambiguous: bool
    note: str


def guess_cell_count(pack_v: float, chemistry: Chemistry = "lipo") -> CellCountGuess:
    """Series cell count from a resting pack voltage.

    Every count n with 3.30 <= V/n <= full+0.10 is a candidate; the smallest one is chosen
    (that is Betaflight's `ceil(V / 4.3)`). More than one candidate is reported as ambiguous
    (16.8 V is a full 4S or an almost empty 5S).
    """
    hi = FULL_CELL_V[chemistry] + DETECT_MAX_MARGIN_V
    lo = DETECT_MIN_REST_CELL_V
    if not math.isfinite(pack_v) or pack_v < NO_PACK_V:
        return CellCountGuess(None, (), False, f"{pack_v:.2f} V: no pack connected")
    first = max(1, math.ceil(pack_v / hi - 1e-9))
    candidates = tuple(
        n for n in range(1, MAX_CELLS + 1) if lo * n - 1e-9 <= pack_v <= hi * n + 1e-9
    )
    if not candidates:
        return CellCountGuess(
            first,
            (),
            True,
            f"{pack_v:.2f} V fits no cell count at a plausible resting voltage; took {first}S "
            f"({pack_v / first:.2f} V/cell): set cell_count if that is wrong",
        )
    if len(candidates) == 1:
        n = candidates[0]
        return CellCountGuess(n, candidates, False, f"{pack_v:.2f} V is {n}S")
    fits = " or ".join(f"{n}S at {pack_v / n:.2f} V/cell" for n in candidates)
    return CellCountGuess(
        candidates[0],
        candidates,
        True,
        f"{pack_v:.2f} V fits {fits}; took {candidates[0]}S: set cell_count if that is wrong",
    )


def _lipo_equivalent(cell_v: float, chemistry: Chemistry) -> float:
    # LiHV: stretch the part above 3.80 V so that 4.35 V lands on LiPo's 4.20 V [INFERRED].
    if chemistry == "lihv" and cell_v > 3.80:
        return 3.80 + (cell_v - 3.80) * (4.20 - 3.80) / (4.35 - 3.80)
    return cell_v


def remaining_from_rest_voltage(cell_v: float, chemistry: Chemistry = "lipo") -> float:
    """Charge left (0-100 %) from a settled resting per-cell voltage; non-decreasing in V."""
    v = _lipo_equivalent(cell_v, chemistry)
    curve = LIPO_REST_CURVE
    if v <= curve[0][0]:
        return 0.0
    if v >= curve[-1][0]:
        return 100.0
    for (v0, p0), (v1, p1) in itertools.pairwise(curve):
        if v <= v1:
            return p0 + (p1 - p0) * (v - v0) / (v1 - v0)
    return 100.0  # pragma: no cover - the loop always returns


StorageState = Literal["below", "storage", "above"]


@dataclass(frozen=True, slots=True)
class StorageCheck:
    state: StorageState
    message: str


def storage_check(cell_v: float, tolerance: float = STORAGE_TOLERANCE_V) -> StorageCheck:
    """Is a resting pack at storage voltage (3.80-3.90 V/cell, +-`tolerance`)?"""
    low, high = round(STORAGE_LOW_V - tolerance, 6), round(STORAGE_HIGH_V + tolerance, 6)
    if cell_v < low:
        return StorageCheck(
            "below", f"{cell_v:.2f} V/cell is below storage: charge to 3.80-3.90 V/cell"
        )
    if cell_v > high:
        return StorageCheck(
            "above", f"{cell_v:.2f} V/cell is above storage: discharge to 3.80-3.90 V/cell"
        )
    return StorageCheck("storage", f"{cell_v:.2f} V/cell is at storage voltage")


class ResistanceEstimator:
    """Pack internal resistance from voltage/current steps: R = -dV/dI.

    Only steps with |dI| >= `min_step_a` between two samples at most `max_step_s` apart are
    used (small steps drown in voltage noise; far-apart samples mix in the state-of-charge
    drop). Steps giving R <= 0 or above `max_ohm` are noise and dropped. The estimate is the
    median of the last `window` steps, once `min_steps` of them exist.
    """

    def __init__(
        self,
        min_step_a: float = 5.0,
        max_step_s: float = 0.5,
        window: int = 15,
        min_steps: int = 3,
        max_ohm: float = 1.0,
    ) -> None:
        self.min_step_a = min_step_a
        self.max_step_s = max_step_s
        self.min_steps = min_steps
        self.max_ohm = max_ohm
        self.steps: deque[float] = deque(maxlen=window)
        self.dropped = 0
        self._last: tuple[int, float, float] | None = None

    def add(self, timestamp_ms: int, volts: float, amps: float) -> float | None:
        """Feed one paired sample; returns the new estimate in ohms when it changed."""
        last, self._last = self._last, (timestamp_ms, volts, amps)
        if last is None:
            return None
        t0, v0, i0 = last
        d_i = amps - i0
        if abs(d_i) < self.min_step_a or not 0 <= (timestamp_ms - t0) / 1000 <= self.max_step_s:
            return None
        r = -(volts - v0) / d_i
        if not 0 < r <= self.max_ohm:
            self.dropped += 1
            return None
        self.steps.append(r)
        return self.estimate

    @property
    def estimate(self) -> float | None:
        if len(self.steps) < self.min_steps:
            return None
        return statistics.median(self.steps)


class ChargeCounter:
    """mAh used: from the ESC's counter when it sends one, else integrated from current.

    Never decreases. The u16 counter of KISS/AM32 wraps at 65536 and is unwrapped; a counter
    that goes back otherwise means the ESC restarted, which `counter()` reports so the caller
    can start a new pack.
    """

    def __init__(self, max_gap_s: float) -> None:
        self.total = 0.0
        self.source: Literal["esc_counter", "integrated"] | None = None
        self._last_counter: float | None = None
        self._integrator = Integrator(max_gap_s)

    def counter(self, value: float) -> bool:
        """Apply an ESC counter value; True (and nothing applied) if the ESC restarted."""
        last = self._last_counter
        if last is None:
            if self.source is None:
                self.total = value  # counted since ESC power-up, i.e. since the pack went in
            self.source = "esc_counter"
            self._last_counter = value
            return False
        delta = value - last
        if delta < 0:
            if last >= COUNTER_WRAP - COUNTER_WRAP_MARGIN and value < COUNTER_WRAP_MARGIN:
                delta += COUNTER_WRAP
            else:
                return True
        self.total += delta
        self._last_counter = value
        return False

    def current(self, timestamp_ms: int, amps: float) -> None:
        if self.source == "esc_counter":
            return
        self.source = "integrated"
        self.total = self._integrator.add(timestamp_ms, amps * 1000.0)


@dataclass(frozen=True, slots=True)
class LipoStatus:
    """What the model knows and why, for `hub status` and the dashboard (not for logs)."""

    cell_count: int | None
    cell_count_source: Literal["override", "balance", "detected"] | None
    cell_count_ambiguous: bool
    cell_count_note: str
    charge_source: Literal["esc_counter", "integrated"] | None
    remaining_source: Literal["coulomb", "voltage"] | None
    packs_seen: int
    storage: StorageCheck | None


_CELL_RE = re.compile(r"^cell_(\d{1,2})$")
_INPUTS = frozenset(
    {"pack_voltage", "current", "consumed_mah", "rpm", "erpm"}
    | {"cell_voltage_min", "cell_voltage_max", "cell_voltage_avg"}
)


class LipoFilter:
    """State of one pack on one device: feed raw readings, get derived readings back.

    Inputs (readings of this device whose source is not `derived`): pack_voltage, current,
    consumed_mah, rpm, erpm, and from a balance-lead monitor either cell_1..cell_N or
    cell_voltage_min/max/avg (used, not re-emitted). Outputs: cell_count, cell_voltage_avg,
    cell_voltage_min, cell_voltage_max, cell_voltage_spread, cell_voltage_rest,
    cell_voltage_spread_rest, voltage_sag, power, energy_wh, consumed_mah, remaining,
    internal_resistance (mOhm). Bad values are counted in `rejected` by reason and skipped.
    """

    def __init__(
        self, device: str, config: PackConfig | None = None, tags: Mapping[str, str] | None = None
    ) -> None:
        self.device = device
        self.config = config or PackConfig()
        self.tags: Mapping[str, str] = dict(tags or {})
        self.rejected: Counter[str] = Counter()
        self.packs_seen = 0
        self._last_ms: int | None = None
        self._current: tuple[int, float] | None = None
        self._motion: tuple[int, bool] | None = None
        self._balance: tuple[int, float, float] | None = None  # (ts, min, max)
        self._rest_since_ms: int | None = None
        self._reset_pack()

    # -- pack lifetime -------------------------------------------------------------------

    def _reset_pack(self) -> None:
        cfg = self.config
        self._count: int | None = cfg.cell_count
        self._count_source: Literal["override", "balance", "detected"] | None = (
            "override" if cfg.cell_count else None
        )
        self._count_note = "set in config" if cfg.cell_count else "waiting for a resting voltage"
        self._count_ambiguous = False
        self._count_emitted: int | None = None
        self._charge = ChargeCounter(cfg.max_gap)
        self._energy = Integrator(cfg.max_gap)
        self._ir = ResistanceEstimator(cfg.ir_min_step_a, cfg.ir_max_step)
        self._rest_pack_v: float | None = None  # last resting pack voltage (sag reference)
        self._settled_min_cell: float | None = None
        self._anchor: tuple[float, float] | None = None  # (soc %, mAh at anchor)
        self._remaining: float | None = None
        self._storage: StorageCheck | None = None
        self._pack_started = False

    def new_pack(self) -> None:
        """Forget everything about the current pack (the user says it was swapped)."""
        self._reset_pack()

    @property
    def status(self) -> LipoStatus:
        return LipoStatus(
            self._count,
            self._count_source,
            self._count_ambiguous,
            self._count_note,
            self._charge.source,
            None
            if self._remaining is None
            else ("coulomb" if self.config.capacity_mah else "voltage"),
            self.packs_seen,
            self._storage,
        )

    # -- input ---------------------------------------------------------------------------

    def feed(self, readings: Iterable[Reading]) -> list[Reading]:
        """Take one batch (typically one decoded frame) and return the derived readings."""
        values: dict[str, float] = {}
        cells: dict[int, float] = {}
        ts: int | None = None
        for r in readings:
            if r.source == DERIVED:
                continue
            match = _CELL_RE.match(r.metric)
            if match:
                cells[int(match.group(1))] = r.value
            elif r.metric in _INPUTS:
                values[r.metric] = r.value
            else:
                continue
            ts = r.timestamp_ms if ts is None else max(ts, r.timestamp_ms)
        if ts is None:
            return []
        cell_list: list[float] | None = None
        if cells:
            if sorted(cells) == list(range(1, len(cells) + 1)):
                cell_list = [cells[k] for k in sorted(cells)]
            else:
                self.rejected["cell_index_gap"] += 1
        return self.feed_values(
            ts,
            pack_voltage=values.get("pack_voltage"),
            current=values.get("current"),
            consumed_mah=values.get("consumed_mah"),
            rpm=values.get("rpm"),
            erpm=values.get("erpm"),
            cells=cell_list,
            cell_min=values.get("cell_voltage_min"),
            cell_max=values.get("cell_voltage_max"),
            cell_avg=values.get("cell_voltage_avg"),
        )

    def feed_values(
        self,
        timestamp_ms: int,
        *,
        pack_voltage: float | None = None,
        current: float | None = None,
        consumed_mah: float | None = None,
        rpm: float | None = None,
        erpm: float | None = None,
        cells: Sequence[float] | None = None,
        cell_min: float | None = None,
        cell_max: float | None = None,
        cell_avg: float | None = None,
    ) -> list[Reading]:
        """The same as `feed`, with the values as arguments (None = not in this sample)."""
        if self._last_ms is not None and timestamp_ms < self._last_ms:
            self.rejected[TIME_BACKWARDS] += 1
            return []
        self._last_ms = timestamp_ms
        cfg, rej, ts = self.config, self.rejected, timestamp_ms
        v = checked(pack_voltage, 0.0, 100.0, rej)
        i = checked(current, -1000.0, 1000.0, rej)
        mah = checked(consumed_mah, 0.0, 1e7, rej)
        rpm = checked(rpm, -1e6, 1e6, rej)
        erpm = checked(erpm, -1e8, 1e8, rej)
        cell_min = checked(cell_min, 0.0, 5.0, rej)
        cell_max = checked(cell_max, 0.0, 5.0, rej)
        cell_avg = checked(cell_avg, 0.0, 5.0, rej)
        cell_values: list[float] | None = None
        if cells:
            good = [checked(c, 0.0, 5.0, rej) for c in cells]
            cell_values = [c for c in good if c is not None] if None not in good else None
        if v is not None and v < NO_PACK_V:
            v = None  # an ESC on a bench supply or with nothing plugged in
            rej[OUT_OF_RANGE] += 1

        # Latest values that other batches pair with.
        if i is not None:
            self._current = (ts, i)
        if rpm is not None or erpm is not None:
            self._motion = (ts, abs(rpm or 0.0) >= 1.0 or abs(erpm or 0.0) >= 1.0)
        if cell_values:
            self._balance = (ts, min(cell_values), max(cell_values))
        elif cell_min is not None or cell_max is not None:
            old = self._balance if self._fresh(self._balance, ts) else None
            lo = cell_min if cell_min is not None else (old[1] if old else math.nan)
            hi = cell_max if cell_max is not None else (old[2] if old else math.nan)
            self._balance = (ts, lo, hi)

        at_rest = self._at_rest(ts)
        if at_rest:
            if self._rest_since_ms is None:
                self._rest_since_ms = ts
        else:
            self._rest_since_ms = None
        settled = at_rest and ts - (self._rest_since_ms or ts) >= cfg.rest_settle * 1000

        # A counter that went back: the ESC restarted, so the pack was unplugged.
        if mah is not None and self._charge.counter(mah):
            self._start_new_pack()
            self._charge.counter(mah)

        n = self._resolve_cell_count(v, cell_values, at_rest)
        rest_cell = v / n if (v is not None and n and at_rest) else None
        if rest_cell is None and cell_values and at_rest:
            rest_cell = statistics.fmean(cell_values)
        if rest_cell is None and cell_avg is not None and at_rest:
            rest_cell = cell_avg
        if settled and rest_cell is not None:
            floor = self._settled_min_cell
            if floor is not None and rest_cell >= floor + cfg.new_pack_rise_v:
                self._start_new_pack()
                n = self._resolve_cell_count(v, cell_values, at_rest)
                rest_cell = v / n if (v is not None and n) else rest_cell
                floor = None
            self._settled_min_cell = rest_cell if floor is None else min(floor, rest_cell)
        if v is not None or cell_values:
            self._pack_started = True

        if i is not None:
            self._charge.current(ts, i)
        power: float | None = None
        i_now = self._current[1] if self._fresh(self._current, ts) and self._current else None
        if v is not None and i_now is not None:
            power = v * i_now
            self._energy.add(ts, power)
        ir: float | None = None
        if v is not None and i is not None:
            ir = self._ir.add(ts, v, i)

        out: list[Reading] = []

        def emit(metric: str, value: float) -> None:
            out.append(derived_reading(self.device, metric, value, ts, self.tags))

        if n is not None and n != self._count_emitted and (v is not None or cell_values):
            emit("cell_count", n)
            self._count_emitted = n
        avg: float | None = None
        if v is not None and n:
            avg = v / n
        elif cell_values:
            avg = statistics.fmean(cell_values)
        balance = self._balance if self._fresh(self._balance, ts) else None
        if avg is not None:
            if cell_avg is None:  # a monitor's own average is not re-emitted
                emit("cell_voltage_avg", round(avg, 4))
            if cell_min is None:
                low = balance[1] if balance and not math.isnan(balance[1]) else avg
                emit("cell_voltage_min", round(low, 4))
        if cell_values:
            emit("cell_voltage_max", round(max(cell_values), 4))
        if balance and (cell_values or cell_min is not None or cell_max is not None):
            spread = balance[2] - balance[1]
            if math.isfinite(spread):
                emit("cell_voltage_spread", round(spread, 4))
                if at_rest:
                    emit("cell_voltage_spread_rest", round(spread, 4))
        if at_rest and rest_cell is not None:
            emit("cell_voltage_rest", round(rest_cell, 4))
            if v is not None:
                self._rest_pack_v = v
            self._storage = storage_check(rest_cell)
        elif v is not None and self._rest_pack_v is not None:
            emit("voltage_sag", round(max(self._rest_pack_v - v, 0.0), 3))
        if power is not None:
            emit("power", round(power, 2))
            emit("energy_wh", round(self._energy.total, 4))
        if self._charge.source is not None and (mah is not None or i is not None):
            emit("consumed_mah", round(self._charge.total, 2))
        if ir is not None:
            emit("internal_resistance", round(ir * 1000.0, 2))
        remaining = self._update_remaining(rest_cell, settled)
        if remaining is not None and (v is not None or cell_values or cell_avg or i is not None):
            emit("remaining", round(remaining, 1))
        return out

    # -- parts ---------------------------------------------------------------------------

    def _fresh(self, entry: tuple[int, object] | tuple[int, float, float] | None, ts: int) -> bool:
        return entry is not None and ts - entry[0] <= self.config.pairing_window * 1000

    def _at_rest(self, ts: int) -> bool:
        # Current decides when known; else a turning motor means load; with neither, rest.
        if self._current is not None and self._fresh(self._current, ts):
            return abs(self._current[1]) < self.config.rest_current_a
        if self._motion is not None and self._fresh(self._motion, ts):
            return not self._motion[1]
        return True

    def _start_new_pack(self) -> None:
        if self._pack_started:
            self.packs_seen += 1
        self._reset_pack()

    def _resolve_cell_count(
        self, v: float | None, cell_values: list[float] | None, at_rest: bool
    ) -> int | None:
        cfg = self.config
        if self._count_source == "override":
            return self._count
        if cell_values:
            if self._count != len(cell_values):
                self._count = len(cell_values)
                self._count_source = "balance"
                self._count_ambiguous = False
                self._count_note = f"{self._count} cells on the balance lead"
            return self._count
        if self._count_source == "balance" or v is None or not at_rest:
            return self._count
        top = FULL_CELL_V[cfg.chemistry] + DETECT_MAX_MARGIN_V + REDETECT_MARGIN_V
        if self._count is None or v > self._count * top:
            guess = guess_cell_count(v, cfg.chemistry)
            if guess.count is not None:
                if self._count is not None:  # a bigger pack replaced this one
                    self._start_new_pack()
                self._count = guess.count
                self._count_source = "detected"
                self._count_ambiguous = guess.ambiguous
                self._count_note = guess.note
        return self._count

    def _update_remaining(self, rest_cell: float | None, settled: bool) -> float | None:
        cfg = self.config
        capacity = cfg.capacity_mah
        if self._anchor is None:
            # The first resting voltage of a pack: it has been sitting, so it counts as settled.
            if rest_cell is None:
                return None
            soc = remaining_from_rest_voltage(rest_cell, cfg.chemistry)
            self._anchor = (soc, self._charge.total)
            self._remaining = soc
            return soc
        if capacity:
            soc0, mah0 = self._anchor
            counted = max(0.0, soc0 - 100.0 * (self._charge.total - mah0) / capacity)
            self._remaining = counted
        if settled and rest_cell is not None and self._remaining is not None:
            by_voltage = remaining_from_rest_voltage(rest_cell, cfg.chemistry)
            if by_voltage < self._remaining:  # the pack knows better; never raise it
                self._anchor = (by_voltage, self._charge.total)
                self._remaining = by_voltage
        return self._remaining
