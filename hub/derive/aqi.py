"""Air quality indices: US EPA AQI (May 2024 breakpoints), PM NowCast, India NAQI, UK DAQI.

Pure functions: concentrations in, index values out. Source of every table and rule:
/work/shared/specs/air-quality.md §1-§3 (EPA-454/B-24-002 TAD, AirNow "AQI equation 2024",
CPCB 2014 NAQI report, Defra DAQI).

US AQI arithmetic is exact: the averaged concentration is *truncated* to the pollutant's step
(PM2.5 0.1 µg/m³, PM10 1 µg/m³, O3 0.001 ppm, CO 0.1 ppm, SO2/NO2 1 ppb) and expressed as an
integer number of steps, so the breakpoints are integers too and the half-up rounding of the
index is done in integers. No float can land between 9.0 and 9.1 or round 50.5 to 50.

Inputs are the averages the index is defined on (24-h PM, 8-h O3 and CO, 1-h NO2 ...); making
those averages is the caller's job (`hub.derive.air` does it for a node's stream).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "NAQI_POLLUTANTS",
    "US_POLLUTANTS",
    "AqiResult",
    "aqi_in",
    "aqi_in_from_concentrations",
    "aqi_us",
    "daqi_band",
    "daqi_uk_pm2_5",
    "daqi_uk_pm10",
    "naqi_category",
    "naqi_subindex",
    "nowcast",
    "nowcast_weight",
    "round_half_up",
    "truncate",
    "us_category",
    "us_subindex",
]

UsPollutant = Literal[
    "pm2_5_24h", "pm10_24h", "o3_8h", "o3_1h", "co_8h", "so2_1h", "so2_24h", "no2_1h"
]


@dataclass(frozen=True, slots=True)
class AqiResult:
    """An overall index: its value, its category and the pollutant that decided it."""

    value: int
    category: str
    pollutant: str


def round_half_up(x: float) -> int:
    """Nearest integer, halves away from zero for x >= 0 (EPA rounding, not banker's)."""
    return math.floor(x + 0.5)


# --------------------------------------------------------------------------- US EPA AQI

US_CATEGORIES: Final = (
    (50, "Good"),
    (100, "Moderate"),
    (150, "Unhealthy for Sensitive Groups"),
    (200, "Unhealthy"),
    (300, "Very Unhealthy"),
    (500, "Hazardous"),
)
BEYOND_AQI: Final = "Beyond the AQI"

_US_INDEX_ROWS: Final = ((0, 50), (51, 100), (101, 150), (151, 200), (201, 300), (301, 500))


@dataclass(frozen=True, slots=True)
class _UsTable:
    scale: int  # steps per unit: the truncation step is 1/scale
    rows: tuple[tuple[int, int, int, int], ...]  # (bp_lo, bp_hi, i_lo, i_hi) in steps
    open_top: bool  # above the top row: extrapolate (True) or undefined (False)
    first_index: int  # index of the first row (1-h O3 starts at 101)


def _us_table(
    scale: int,
    bps: Sequence[tuple[float, float] | None],
    *,
    open_top: bool = True,
) -> _UsTable:
    rows = []
    first = None
    for (i_lo, i_hi), bp in zip(_US_INDEX_ROWS, bps, strict=True):
        if bp is None:
            continue
        if first is None:
            first = i_lo
        rows.append((round(bp[0] * scale), round(bp[1] * scale), i_lo, i_hi))
    assert first is not None
    return _UsTable(scale, tuple(rows), open_top, first)


# May 2024 TAD, Table 6 (spec §1.1). Rows a pollutant does not define are None.
_US: Final[Mapping[str, _UsTable]] = {
    "pm2_5_24h": _us_table(
        10, [(0.0, 9.0), (9.1, 35.4), (35.5, 55.4), (55.5, 125.4), (125.5, 225.4), (225.5, 325.4)]
    ),
    "pm10_24h": _us_table(1, [(0, 54), (55, 154), (155, 254), (255, 354), (355, 424), (425, 604)]),
    # 8-h O3 does not define AQI > 300: above 0.200 ppm the 1-h value must be used.
    "o3_8h": _us_table(
        1000,
        [(0.0, 0.054), (0.055, 0.070), (0.071, 0.085), (0.086, 0.105), (0.106, 0.200), None],
        open_top=False,
    ),
    # 1-h O3 only defines AQI >= 101.
    "o3_1h": _us_table(
        1000, [None, None, (0.125, 0.164), (0.165, 0.204), (0.205, 0.404), (0.405, 0.604)]
    ),
    "co_8h": _us_table(
        10, [(0.0, 4.4), (4.5, 9.4), (9.5, 12.4), (12.5, 15.4), (15.5, 30.4), (30.5, 50.4)]
    ),
    # 1-h SO2 does not define AQI >= 200: above 304 ppb the 24-h rows are used.
    "so2_1h": _us_table(1, [(0, 35), (36, 75), (76, 185), (186, 304), None, None], open_top=False),
    "so2_24h": _us_table(1, [(0, 35), (36, 75), (76, 185), (186, 304), (305, 604), (605, 1004)]),
    "no2_1h": _us_table(1, [(0, 53), (54, 100), (101, 360), (361, 649), (650, 1249), (1250, 2049)]),
}

US_POLLUTANTS: Final = tuple(_US)


def _check_concentration(c: float) -> None:
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"a concentration must be a finite number >= 0, got {c!r}")


def truncate(pollutant: str, c: float) -> float:
    """`c` truncated to the pollutant's reporting step (e.g. PM2.5 35.49 -> 35.4)."""
    table = _US[pollutant]
    return _steps(table, c) / table.scale


def _steps(table: _UsTable, c: float) -> int:
    # round(..., 6) first so that 9.1 * 10 == 90.99999999999999 still truncates to 91.
    return math.floor(round(c * table.scale, 6))


def us_subindex(pollutant: str, c: float) -> int | None:
    """The AQI sub-index of one pollutant from its averaged concentration.

    `pollutant` is one of `US_POLLUTANTS` (averaging period in the name: `pm2_5_24h`, `o3_8h`,
    ...). Units: PM in µg/m³, O3 and CO in ppm, SO2 and NO2 in ppb. Returns None where that
    averaging period does not define an index (8-h O3 above 0.200 ppm, 1-h O3 below 0.125 ppm,
    1-h SO2 above 304 ppb). Above the top row (AQI 500, "Beyond the AQI") the top row's line is
    extended, so a smoke event still reads as worse than 500 instead of flat-lining.

    Raises ValueError for an unknown pollutant or a negative / non-finite concentration.
    """
    table = _US.get(pollutant)
    if table is None:
        raise ValueError(f"unknown pollutant {pollutant!r}; known: {', '.join(_US)}")
    _check_concentration(c)
    x = _steps(table, c)
    rows = table.rows
    if x < rows[0][0]:
        return None  # only 1-h O3 has a first row above zero
    # The row that holds x; above the top row, the top row's line is extended.
    bp_lo, bp_hi, i_lo, i_hi = next((row for row in rows if x <= row[1]), rows[-1])
    if x > bp_hi and not table.open_top:
        return None
    # I = (I_hi - I_lo) / (BP_hi - BP_lo) * (C - BP_lo) + I_lo, rounded half-up, in integers.
    den = bp_hi - bp_lo
    return i_lo + (2 * (i_hi - i_lo) * (x - bp_lo) + den) // (2 * den)


def us_category(aqi: int) -> str:
    """The EPA category of an AQI value ("Beyond the AQI" above 500)."""
    for top, name in US_CATEGORIES:
        if aqi <= top:
            return name
    return BEYOND_AQI


def aqi_us(concentrations: Mapping[str, float]) -> AqiResult | None:
    """The overall AQI: the highest sub-index over the given pollutants (keys as in
    `us_subindex`), or None when none of them defines an index."""
    best: tuple[int, str] | None = None
    for pollutant, c in concentrations.items():
        sub = us_subindex(pollutant, c)
        if sub is not None and (best is None or sub > best[0]):
            best = (sub, pollutant)
    if best is None:
        return None
    return AqiResult(best[0], us_category(best[0]), best[1])


# --------------------------------------------------------------------------- NowCast


def nowcast_weight(hours: Sequence[float | None]) -> float | None:
    """The NowCast weight factor w = max(1 - (cmax - cmin) / cmax, 0.5) over the valid hours."""
    valid = [c for c in hours[:12] if c is not None and math.isfinite(c)]
    if not valid:
        return None
    cmax = max(valid)
    if cmax <= 0:
        return 1.0  # all zero: no change at all, plain mean
    w = 1.0 - (cmax - min(valid)) / cmax
    return 0.5 if w < 0.5 else w


def nowcast(hours: Sequence[float | None]) -> float | None:
    """EPA PM NowCast from hourly means, **newest first** (c1 = the hour just completed).

    Up to 12 hours are used; missing hours are None (or NaN) and drop out of both sums. Returns
    None unless at least 2 of the 3 most recent hours are valid (AirNow's completeness rule).
    The result is raw (not truncated): use `truncate("pm2_5_24h", x)` to report it and
    `us_subindex` (which truncates) for its AQI.
    """
    recent = hours[:12]
    valid3 = sum(1 for c in recent[:3] if c is not None and math.isfinite(c))
    if valid3 < 2:
        return None
    w = nowcast_weight(recent)
    if w is None:
        return None
    num = den = 0.0
    weight = 1.0
    for c in recent:
        if c is not None and math.isfinite(c):
            if c < 0:
                raise ValueError(f"a concentration must be >= 0, got {c!r}")
            num += weight * c
            den += weight
        weight *= w
    return num / den


# --------------------------------------------------------------------------- India NAQI

NAQI_CATEGORIES: Final = (
    (50, "Good"),
    (100, "Satisfactory"),
    (200, "Moderately polluted"),
    (300, "Poor"),
    (400, "Very poor"),
    (500, "Severe"),
)
_NAQI_INDEX_ROWS: Final = ((0, 50), (51, 100), (101, 200), (201, 300), (301, 400), (401, 500))


def _naqi_rows(
    bps: Sequence[tuple[float, float]], top_lo: float
) -> tuple[tuple[float, float, int, int], ...]:
    # CPCB's top band is open ("250+"); like CPCB's calculator it is given the width of the
    # band below it and the index is capped at 500 (spec §2).
    prev_lo, prev_hi = bps[-1]
    full = [*bps, (top_lo, top_lo + (prev_hi - prev_lo))]
    return tuple(
        (lo, hi, i_lo, i_hi) for (lo, hi), (i_lo, i_hi) in zip(full, _NAQI_INDEX_ROWS, strict=True)
    )


# CPCB 2014 (spec §2): µg/m³, CO in mg/m³; 24-h means except O3 and CO (8 h).
_NAQI: Final[Mapping[str, tuple[tuple[float, float, int, int], ...]]] = {
    "pm10": _naqi_rows([(0, 50), (51, 100), (101, 250), (251, 350), (351, 430)], 430),
    "pm2_5": _naqi_rows([(0, 30), (31, 60), (61, 90), (91, 120), (121, 250)], 250),
    "no2": _naqi_rows([(0, 40), (41, 80), (81, 180), (181, 280), (281, 400)], 400),
    "o3": _naqi_rows([(0, 50), (51, 100), (101, 168), (169, 208), (209, 748)], 748),
    "co": _naqi_rows([(0, 1.0), (1.1, 2.0), (2.1, 10), (10.1, 17), (17.1, 34)], 34),
    "so2": _naqi_rows([(0, 40), (41, 80), (81, 380), (381, 800), (801, 1600)], 1600),
    "nh3": _naqi_rows([(0, 200), (201, 400), (401, 800), (801, 1200), (1201, 1800)], 1800),
    "pb": _naqi_rows([(0, 0.5), (0.5, 1.0), (1.1, 2.0), (2.1, 3.0), (3.1, 3.5)], 3.5),
}
NAQI_POLLUTANTS: Final = tuple(_NAQI)
_NAQI_PM: Final = frozenset({"pm2_5", "pm10"})


def naqi_subindex(pollutant: str, c: float) -> float:
    """India NAQI sub-index (unrounded) of one pollutant's averaged concentration.

    Linear within the band that holds `c`. A value in the gap between two bands (PM2.5
    30 < c < 31) belongs to the lower band and gets its top index (50): the index never
    decreases as the concentration rises. Capped at 500.
    """
    rows = _NAQI.get(pollutant)
    if rows is None:
        raise ValueError(f"unknown NAQI pollutant {pollutant!r}; known: {', '.join(_NAQI)}")
    _check_concentration(c)
    prev_top = 0
    for lo, hi, i_lo, i_hi in rows:
        if c < lo:
            return float(prev_top)  # in the gap below this band
        if c <= hi:
            return i_lo + (i_hi - i_lo) / (hi - lo) * (c - lo)
        prev_top = i_hi
    return 500.0


def naqi_category(index: int) -> str:
    for top, name in NAQI_CATEGORIES:
        if index <= top:
            return name
    return NAQI_CATEGORIES[-1][1]


def aqi_in(subindices: Mapping[str, float], min_pollutants: int = 3) -> AqiResult | None:
    """India overall AQI from sub-indices: the highest one, rounded half-up.

    Reported only when at least `min_pollutants` pollutants (CPCB: 3) are present and one of
    them is PM2.5 or PM10; None otherwise.
    """
    if len(subindices) < min_pollutants or not _NAQI_PM.intersection(subindices):
        return None
    pollutant, worst = max(subindices.items(), key=lambda kv: kv[1])
    value = min(round_half_up(worst), 500)
    return AqiResult(value, naqi_category(value), pollutant)


def aqi_in_from_concentrations(
    concentrations: Mapping[str, float], min_pollutants: int = 3
) -> AqiResult | None:
    """`aqi_in` from averaged concentrations keyed by `NAQI_POLLUTANTS`."""
    subs = {p: naqi_subindex(p, c) for p, c in concentrations.items()}
    return aqi_in(subs, min_pollutants)


# --------------------------------------------------------------------------- UK DAQI

# Lower bound of index 2..10 (µg/m³, 24-h running mean). The 5/6 boundary follows Defra's own
# table (42-47 / 48-53); Breathe London prints 42-46 / 47-53 (spec §3, unresolved).
_DAQI_PM2_5: Final = (12, 24, 36, 42, 48, 54, 59, 65, 71)
_DAQI_PM10: Final = (17, 34, 51, 59, 67, 76, 84, 92, 101)
DAQI_BANDS: Final = ((3, "Low"), (6, "Moderate"), (9, "High"), (10, "Very High"))


def _daqi(lower_bounds: Sequence[int], c: float) -> int:
    _check_concentration(c)
    index = 1
    for lo in lower_bounds:
        # Bands are whole µg/m³ (0-11, 12-23): 11.6 still reads as 11 until it reaches 12.
        if c >= lo:
            index += 1
    return index


def daqi_uk_pm2_5(c: float) -> int:
    """UK DAQI (1-10) for a 24-h mean PM2.5 concentration in µg/m³."""
    return _daqi(_DAQI_PM2_5, c)


def daqi_uk_pm10(c: float) -> int:
    """UK DAQI (1-10) for a 24-h mean PM10 concentration in µg/m³."""
    return _daqi(_DAQI_PM10, c)


def daqi_band(index: int) -> str:
    for top, name in DAQI_BANDS:
        if index <= top:
            return name
    return DAQI_BANDS[-1][1]
