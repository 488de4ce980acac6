"""Comfort helpers: CO2/VOC/NOx bands, dew point, absolute humidity, the comfort score."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.derive.comfort import (
    COMFORT_CURVES,
    absolute_humidity,
    co2_band,
    comfort_band,
    comfort_factor,
    comfort_score,
    dew_point,
    nox_band,
    voc_band,
)


@pytest.mark.parametrize(
    ("t", "rh", "td"),
    [
        (20.0, 50.0, 9.26),
        (25.0, 100.0, 25.0),
        (0.0, 100.0, 0.0),
        (30.0, 70.0, 23.93),
        (-10.0, 80.0, -12.80),
    ],
)
def test_dew_point(t: float, rh: float, td: float) -> None:
    assert dew_point(t, rh) == pytest.approx(td, abs=0.01)


@pytest.mark.parametrize(
    ("t", "rh", "ah"),
    [(20.0, 50.0, 8.62), (30.0, 100.0, 30.3), (0.0, 100.0, 4.85), (25.0, 0.5, 0.115)],
)
def test_absolute_humidity(t: float, rh: float, ah: float) -> None:
    assert absolute_humidity(t, rh) == pytest.approx(ah, rel=0.01)


@pytest.mark.parametrize(
    ("t", "rh"), [(20, 0), (20, 101), (math.nan, 50), (20, math.inf), (-250, 50)]
)
def test_psychrometrics_refuse_impossible_input(t: float, rh: float) -> None:
    with pytest.raises(ValueError):
        dew_point(t, rh)
    with pytest.raises(ValueError):
        absolute_humidity(t, rh)


def test_co2_band_edges() -> None:
    assert [co2_band(v) for v in (400, 799, 800, 999, 1000, 1399, 1400, 2000, 2001)] == [
        "good", "good", "moderate", "moderate", "elevated", "elevated", "high", "high",
        "unacceptable",
    ]  # fmt: skip


def test_voc_and_nox_bands() -> None:
    assert [voc_band(v) for v in (1, 100, 101, 150, 151, 250, 251, 400, 401, 500)] == [
        "normal", "normal", "slightly elevated", "slightly elevated", "elevated", "elevated",
        "high", "high", "very high", "very high",
    ]  # fmt: skip
    assert [nox_band(v) for v in (1, 2, 20, 21, 150, 151, 300, 301)] == [
        "normal", "slightly elevated", "slightly elevated", "elevated", "elevated", "high",
        "high", "very high",
    ]  # fmt: skip
    with pytest.raises(ValueError):
        voc_band(math.nan)


def test_factor_curves() -> None:
    assert comfort_factor("temperature", 21) == 100
    assert comfort_factor("temperature", 15) == 50
    assert comfort_factor("temperature", 40) == 0
    assert comfort_factor("humidity", 35) == 85
    assert comfort_factor("co2", 400) == 100
    assert comfort_factor("co2", 1200) == 57.5
    assert comfort_factor("co2", 5000) == 0
    assert comfort_factor("pm2_5", 9.0) == 100
    with pytest.raises(ValueError, match="no comfort curve"):
        comfort_factor("noise", 40)


def test_score_rules() -> None:
    ideal = {"temperature": 21.0, "humidity": 45.0, "co2": 600.0, "voc_index": 90.0, "pm2_5": 3.0}
    assert comfort_score(ideal) == 100
    assert comfort_band(100) == "excellent"
    # One factor at 0 among five: 0.5 * 80 + 0.5 * 0 = 40.
    assert comfort_score({**ideal, "co2": 2500.0}) == 40
    # 0.5 * mean(100, 57.5) + 0.5 * 57.5 = 39.375 + 28.75 = 68.125
    assert comfort_score({"temperature": 21.0, "co2": 1200.0}) == 68
    assert comfort_band(68) == "fair"
    assert comfort_score({"pressure": 1013.0}) is None
    assert comfort_score({}) is None
    assert [comfort_band(s) for s in (0, 59, 60, 79, 80, 89, 90)] == [
        "poor", "poor", "fair", "fair", "good", "good", "excellent",
    ]  # fmt: skip


_BETTER_IS_LOWER = ("co2", "voc_index", "pm2_5")


@given(
    metric=st.sampled_from(_BETTER_IS_LOWER),
    a=st.floats(0, 3000, allow_nan=False),
    b=st.floats(0, 3000, allow_nan=False),
    t=st.floats(5, 35, allow_nan=False),
    rh=st.floats(1, 100, allow_nan=False),
)
def test_a_worse_factor_never_raises_the_score(
    metric: str, a: float, b: float, t: float, rh: float
) -> None:
    better, worse = sorted((a, b))
    base = {"temperature": t, "humidity": rh}
    s_better = comfort_score({**base, metric: better})
    s_worse = comfort_score({**base, metric: worse})
    assert s_better is not None and s_worse is not None
    assert 0 <= s_worse <= s_better <= 100


@given(
    st.dictionaries(st.sampled_from(sorted(COMFORT_CURVES)), st.floats(-50, 5000, allow_nan=False))
)
def test_score_is_within_0_100(values: dict[str, float]) -> None:
    score = comfort_score(values)
    assert (score is None) == (not values)
    assert score is None or 0 <= score <= 100
