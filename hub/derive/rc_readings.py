"""Small parts shared by the RC derivations: making derived readings, checking inputs,
integrating over time.

Pure: timestamps come in with the values. Units come from the metric catalog.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

from hub.model import CATALOG, Reading

DERIVED = "derived"

# Why an input value was not used; counted per reason by each filter (`rejected`).
NOT_FINITE = "not_finite"
OUT_OF_RANGE = "out_of_range"
TIME_BACKWARDS = "timestamp_went_backwards"


def unit_of(metric: str) -> str | None:
    spec = CATALOG.get(metric)
    if spec is not None:
        return spec.unit
    return None


def derived_reading(
    device: str, metric: str, value: float, timestamp_ms: int, tags: Mapping[str, str]
) -> Reading:
    return Reading(device, metric, value, timestamp_ms, unit_of(metric), tags, DERIVED)


def checked(value: float | None, low: float, high: float, rejected: Counter[str]) -> float | None:
    """`value` if it is a finite number in [low, high]; None (and counted) otherwise."""
    if value is None:
        return None
    if not math.isfinite(value):
        rejected[NOT_FINITE] += 1
        return None
    if not low <= value <= high:
        rejected[OUT_OF_RANGE] += 1
        return None
    return float(value)


class Integrator:
    """Trapezoidal integral of a non-negative rate over time, in rate x hours.

    A gap longer than `max_gap_s` between two samples is not bridged: nobody knows what the
    rate did while no sample arrived, so that interval adds nothing (and `gaps` counts it).
    Negative rates count as zero, so the integral never decreases.
    """

    def __init__(self, max_gap_s: float) -> None:
        self.max_gap_s = max_gap_s
        self.total = 0.0
        self.gaps = 0
        self._last: tuple[int, float] | None = None

    def add(self, timestamp_ms: int, rate: float) -> float:
        rate = max(rate, 0.0)
        if self._last is not None:
            last_ms, last_rate = self._last
            dt_s = (timestamp_ms - last_ms) / 1000.0
            if dt_s < 0:
                return self.total  # out of order: ignored, the caller counts it
            if dt_s <= self.max_gap_s:
                self.total += (last_rate + rate) / 2.0 * dt_s / 3600.0
            else:
                self.gaps += 1
        self._last = (timestamp_ms, rate)
        return self.total

    def pause(self) -> None:
        """Forget the last sample (the next one starts a new stretch)."""
        self._last = None
