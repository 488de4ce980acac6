"""Humidity corrections for Plantower PMS5003 PM2.5 (the PurpleAir sensor), after US EPA.

Pure functions: a PM2.5 reading and the relative humidity in, a corrected value out. Each
correction is named, and the result carries the name, so a stored `pm2_5_corrected` always
says which equation made it (spec §5.1, /work/shared/specs/air-quality.md).

Inputs (ESPHome `pmsx003`): `pm_2_5_std` is the CF=1 value that PurpleAir calls `cf_1`;
`pm_2_5` is the ATM value (`cf_atm`). EPA developed the equations on averaged data (24-h for
Barkjohn 2021, hourly on the Fire and Smoke Map), so feed them averages, not 1-s samples. RH is
the node's own relative humidity in %. Negative results are clamped to 0.

Names:
* `epa_2021`      - Barkjohn et al. 2021, US-wide: 0.524·cf_1 - 0.0862·RH + 5.75 (input cf_1)
* `epa_fasm_2021` - the AirNow Fire and Smoke Map piecewise version (input **cf_atm**)
* `epa_2022`      - Barkjohn et al. 2022, extended for smoke: `epa_2021` below 570, a blend up
                    to 611, a quadratic above (input cf_1; the quadratic's coefficients are
                    from memory in the spec and reproduce the paper's 300/400 anchor points)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

__all__ = [
    "CORRECTIONS",
    "CORRECTION_INPUT",
    "Corrected",
    "CorrectionName",
    "correct",
    "epa_2021",
    "epa_2022",
    "epa_fasm_2021",
]

CorrectionName = Literal["epa_2021", "epa_fasm_2021", "epa_2022"]


@dataclass(frozen=True, slots=True)
class Corrected:
    """A corrected PM2.5 concentration (µg/m³) and the name of the correction that made it."""

    value: float
    correction: str


def _check(pm: float, rh: float) -> None:
    if not math.isfinite(pm) or pm < 0:
        raise ValueError(f"PM2.5 must be a finite number >= 0, got {pm!r}")
    if not math.isfinite(rh) or not 0 <= rh <= 100:
        raise ValueError(f"relative humidity must be within 0-100 %, got {rh!r}")


def _us_wide(cf1: float, rh: float) -> float:
    return 0.524 * cf1 - 0.0862 * rh + 5.75


def epa_2021(cf1: float, rh: float) -> float:
    """EPA US-wide correction (Barkjohn et al. 2021, AMT 14, 4617) of a PurpleAir `cf_1` value."""
    _check(cf1, rh)
    return max(_us_wide(cf1, rh), 0.0)


def epa_fasm_2021(cf_atm: float, rh: float) -> float:
    """EPA Fire and Smoke Map piecewise correction (2021, slide 26) of a `cf_atm` value."""
    _check(cf_atm, rh)
    x = cf_atm
    if x < 30:
        y = 0.524 * x - 0.0862 * rh + 5.75
    elif x < 50:
        t = x / 20 - 3 / 2
        y = (0.786 * t + 0.524 * (1 - t)) * x - 0.0862 * rh + 5.75
    elif x < 210:
        y = 0.786 * x - 0.0862 * rh + 5.75
    elif x < 260:
        t = x / 50 - 21 / 5
        y = (
            (0.69 * t + 0.786 * (1 - t)) * x
            - 0.0862 * rh * (1 - t)
            + 2.966 * t
            + 5.75 * (1 - t)
            + 8.84e-4 * x * x * t
        )
    else:
        y = 2.966 + 0.69 * x + 8.84e-4 * x * x
    return max(y, 0.0)


def epa_2022(cf1: float, rh: float) -> float:
    """EPA extended correction for extreme smoke (Barkjohn et al. 2022, Sensors 22, 9669)."""
    _check(cf1, rh)
    if cf1 < 570:
        y = _us_wide(cf1, rh)
    else:
        quad = 4.21e-4 * cf1 * cf1 + 0.392 * cf1 + 3.44
        if cf1 < 611:
            t = 0.0244 * cf1 - 13.9
            y = t * quad + (1 - t) * _us_wide(cf1, rh)
        else:
            y = quad
    return max(y, 0.0)


CORRECTIONS: Final[Mapping[str, Callable[[float, float], float]]] = MappingProxyType(
    {"epa_2021": epa_2021, "epa_fasm_2021": epa_fasm_2021, "epa_2022": epa_2022}
)
"""Every correction by name: (pm, rh) -> µg/m³."""

CORRECTION_INPUT: Final[Mapping[str, str]] = MappingProxyType(
    {"epa_2021": "cf_1", "epa_fasm_2021": "cf_atm", "epa_2022": "cf_1"}
)
"""Which Plantower value each correction expects (`cf_1` = ESPHome `pm_2_5_std`)."""


def correct(name: str, pm: float, rh: float) -> Corrected:
    """Apply the correction called `name` (one of `CORRECTIONS`) and record its name."""
    fn = CORRECTIONS.get(name)
    if fn is None:
        raise ValueError(f"unknown correction {name!r}; known: {', '.join(CORRECTIONS)}")
    return Corrected(fn(pm, rh), name)
