"""Indoor comfort: CO2, VOC and NOx index bands, dew point, absolute humidity, a comfort score.

Pure functions, values in and values out (spec §4, /work/shared/specs/air-quality.md).

CO2 bands (ppm) are the hub default from the spec: the EN 13779 IDA ladder plus the German UBA
"unacceptable" line: good < 800, moderate 800-1000, elevated 1000-1400, high 1400-2000,
unacceptable > 2000. VOC index bands are Sensirion's app mapping (1-100 normal, 101-150 slightly
elevated, 151-250 elevated, 251-400 high, > 400 very high; unverified in the spec). The NOx
index has its baseline at 1, so any value above 1 is an event; its bands (1 normal, 2-20
slightly elevated, 21-150 elevated, 151-300 high, > 300 very high) are the hub's own choice.

Dew point and absolute humidity use the Magnus formula over water with the Sonntag 1990
constants (a = 17.62, b = 243.12 °C), good to about ±0.35 °C from -45 to 60 °C.

Comfort score: the hub's own 0-100 score. It is *not* the Awair Score (whose weights are not
public); it borrows only the idea of per-factor ranges. Each available factor gets a sub-score
from a piecewise-linear curve through the points below (flat outside the first/last point):

=============  =====================================================================
factor         points (value -> sub-score)
=============  =====================================================================
temperature    12 °C -> 0, 18 -> 100, 25 -> 100, 31 -> 0
humidity       15 % -> 0, 30 -> 70, 40 -> 100, 50 -> 100, 60 -> 70, 80 -> 0
co2            800 ppm -> 100, 1000 -> 75, 1400 -> 40, 2000 -> 0
voc_index      100 -> 100, 150 -> 80, 250 -> 40, 400 -> 10, 500 -> 0
pm2_5          9.0 µg/m³ -> 100, 35.4 -> 60, 55.4 -> 20, 125.4 -> 0  (EPA AQI band edges)
=============  =====================================================================

The score is ``round_half_up(0.5 * mean + 0.5 * worst)`` over the available factors, so one
bad factor pulls the score down hard (a stuffy room is not "good" because its temperature is
perfect) while the others still count. No factor -> no score. Improving any factor never
lowers the score. Bands: 90-100 excellent, 80-89 good, 60-79 fair, 0-59 poor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Final

from hub.derive.aqi import round_half_up

__all__ = [
    "COMFORT_CURVES",
    "absolute_humidity",
    "co2_band",
    "comfort_band",
    "comfort_factor",
    "comfort_score",
    "dew_point",
    "nox_band",
    "voc_band",
]

_MAGNUS_A: Final = 17.62
_MAGNUS_B: Final = 243.12  # °C
_MAGNUS_E0: Final = 6.112  # hPa, saturation vapour pressure at 0 °C
_WATER_GAS_CONSTANT_INV: Final = 216.7  # g·K/J: 100 Pa/hPa / R_v (461.5 J/(kg·K)) * 1000 g/kg

VOC_BANDS: Final = (
    (100, "normal"),
    (150, "slightly elevated"),
    (250, "elevated"),
    (400, "high"),
)
NOX_BANDS: Final = (
    (1, "normal"),
    (20, "slightly elevated"),
    (150, "elevated"),
    (300, "high"),
)

COMFORT_CURVES: Final[Mapping[str, tuple[tuple[float, float], ...]]] = {
    "temperature": ((12.0, 0.0), (18.0, 100.0), (25.0, 100.0), (31.0, 0.0)),
    "humidity": (
        (15.0, 0.0),
        (30.0, 70.0),
        (40.0, 100.0),
        (50.0, 100.0),
        (60.0, 70.0),
        (80.0, 0.0),
    ),
    "co2": ((800.0, 100.0), (1000.0, 75.0), (1400.0, 40.0), (2000.0, 0.0)),
    "voc_index": ((100.0, 100.0), (150.0, 80.0), (250.0, 40.0), (400.0, 10.0), (500.0, 0.0)),
    "pm2_5": ((9.0, 100.0), (35.4, 60.0), (55.4, 20.0), (125.4, 0.0)),
}
"""Sub-score curves per factor (catalog metric names), documented in the module docstring."""

COMFORT_BANDS: Final = ((59, "poor"), (79, "fair"), (89, "good"), (100, "excellent"))


def _finite(x: float, what: str) -> None:
    if not math.isfinite(x):
        raise ValueError(f"{what} must be a finite number, got {x!r}")


def co2_band(ppm: float) -> str:
    """good < 800 <= moderate < 1000 <= elevated < 1400 <= high <= 2000 < unacceptable."""
    _finite(ppm, "CO2")
    if ppm < 800:
        return "good"
    if ppm < 1000:
        return "moderate"
    if ppm < 1400:
        return "elevated"
    if ppm <= 2000:
        return "high"
    return "unacceptable"


def _index_band(bands: Sequence[tuple[int, str]], index: float, above: str, what: str) -> str:
    _finite(index, what)
    for top, name in bands:
        if index <= top:
            return name
    return above


def voc_band(index: float) -> str:
    """Band of a Sensirion VOC index (1-500, 100 = the sensor's learned 24-h average)."""
    return _index_band(VOC_BANDS, index, "very high", "VOC index")


def nox_band(index: float) -> str:
    """Band of a Sensirion NOx index (1-500, 1 = baseline; above 1 is an event)."""
    return _index_band(NOX_BANDS, index, "very high", "NOx index")


def _check_th(temperature: float, humidity: float) -> None:
    _finite(temperature, "temperature")
    _finite(humidity, "relative humidity")
    if not 0 < humidity <= 100:
        raise ValueError(f"relative humidity must be within (0, 100] %, got {humidity!r}")
    if temperature <= -_MAGNUS_B:
        raise ValueError(f"temperature {temperature!r} °C is below the formula's range")


def dew_point(temperature: float, humidity: float) -> float:
    """Dew point (°C) from air temperature (°C) and relative humidity (%, > 0)."""
    _check_th(temperature, humidity)
    gamma = math.log(humidity / 100.0) + _MAGNUS_A * temperature / (_MAGNUS_B + temperature)
    return _MAGNUS_B * gamma / (_MAGNUS_A - gamma)


def absolute_humidity(temperature: float, humidity: float) -> float:
    """Absolute humidity (g/m³, water vapour density) from temperature (°C) and RH (%)."""
    _check_th(temperature, humidity)
    e_sat = _MAGNUS_E0 * math.exp(_MAGNUS_A * temperature / (_MAGNUS_B + temperature))
    vapour = humidity / 100.0 * e_sat  # hPa
    return _WATER_GAS_CONSTANT_INV * vapour / (273.15 + temperature)


def comfort_factor(metric: str, value: float) -> float:
    """Sub-score 0-100 of one factor (a key of `COMFORT_CURVES`), linear between points."""
    points = COMFORT_CURVES.get(metric)
    if points is None:
        raise ValueError(f"no comfort curve for {metric!r}; known: {', '.join(COMFORT_CURVES)}")
    _finite(value, metric)
    if value <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in pairwise(points):
        if value <= x1:
            return y0 + (y1 - y0) * (value - x0) / (x1 - x0)
    return points[-1][1]


def comfort_score(values: Mapping[str, float]) -> int | None:
    """The hub's indoor comfort score 0-100 from whichever factors are given.

    `values` is keyed by catalog metric names (`temperature`, `humidity`, `co2`, `voc_index`,
    `pm2_5`); other keys are ignored. None when no factor is present. Rules: module docstring.
    """
    subs = [comfort_factor(m, v) for m, v in values.items() if m in COMFORT_CURVES]
    if not subs:
        return None
    return round_half_up(0.5 * (sum(subs) / len(subs)) + 0.5 * min(subs))


def comfort_band(score: float) -> str:
    """excellent 90-100, good 80-89, fair 60-79, poor 0-59."""
    for top, name in COMFORT_BANDS:
        if score <= top:
            return name
    return COMFORT_BANDS[-1][1]
