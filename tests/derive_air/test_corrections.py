"""EPA PurpleAir (PMS5003) corrections against the spec's vectors (§5.1, §7)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.derive.corrections import (
    CORRECTION_INPUT,
    CORRECTIONS,
    Corrected,
    correct,
    epa_2021,
    epa_2022,
    epa_fasm_2021,
)


@pytest.mark.parametrize(("cf1", "rh", "expected"), [(20, 50, 11.92), (100, 70, 52.12)])
def test_epa_2021_us_wide(cf1: float, rh: float, expected: float) -> None:
    assert epa_2021(cf1, rh) == pytest.approx(expected, abs=0.005)


@pytest.mark.parametrize(
    ("cf_atm", "expected"),
    [(20, 11.92), (40, 27.64), (100, 80.04), (235, 200.04), (300, 289.53)],
)
def test_fire_and_smoke_map_piecewise(cf_atm: float, expected: float) -> None:
    assert epa_fasm_2021(cf_atm, 50) == pytest.approx(expected, abs=0.005)


@pytest.mark.parametrize(
    ("cf1", "expected"),
    [(500, 263.4), (570, 300.6), (590, 345.7), (611, 400.1), (800, 586.5)],
)
def test_epa_2022_extended(cf1: float, expected: float) -> None:
    assert epa_2022(cf1, 50) == pytest.approx(expected, abs=0.05)


def test_piecewise_pieces_meet_at_their_edges() -> None:
    for edge in (30, 50, 210, 260):
        below, above = epa_fasm_2021(edge - 1e-9, 50), epa_fasm_2021(edge, 50)
        assert below == pytest.approx(above, abs=1e-3)


def test_negative_results_are_clamped() -> None:
    assert epa_2021(0, 100) == 0.0  # 5.75 - 8.62
    assert epa_fasm_2021(0, 100) == 0.0
    assert epa_2022(0, 100) == 0.0


@pytest.mark.parametrize(
    ("pm", "rh"), [(-1, 50), (math.nan, 50), (10, -1), (10, 101), (10, math.inf)]
)
def test_bad_input_raises_value_error(pm: float, rh: float) -> None:
    for fn in CORRECTIONS.values():
        with pytest.raises(ValueError):
            fn(pm, rh)


def test_result_records_the_correction_name() -> None:
    assert correct("epa_2021", 20, 50) == Corrected(pytest.approx(11.92, abs=0.005), "epa_2021")
    assert correct("epa_fasm_2021", 40, 50).correction == "epa_fasm_2021"
    assert set(CORRECTION_INPUT) == set(CORRECTIONS)
    assert CORRECTION_INPUT["epa_fasm_2021"] == "cf_atm"
    with pytest.raises(ValueError, match="unknown correction"):
        correct("lrapa", 20, 50)


@given(
    name=st.sampled_from(sorted(CORRECTIONS)),
    pm=st.floats(0, 2000, allow_nan=False),
    rh=st.floats(0, 100, allow_nan=False),
)
def test_corrections_are_finite_and_not_negative(name: str, pm: float, rh: float) -> None:
    value = CORRECTIONS[name](pm, rh)
    assert math.isfinite(value) and value >= 0
