"""US EPA AQI, NowCast, India NAQI and UK DAQI against the spec's vectors (§7) and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.derive import aqi
from hub.derive.aqi import (
    AqiResult,
    aqi_in,
    aqi_in_from_concentrations,
    aqi_us,
    daqi_band,
    daqi_uk_pm2_5,
    daqi_uk_pm10,
    naqi_subindex,
    nowcast,
    nowcast_weight,
    truncate,
    us_category,
    us_subindex,
)

# ------------------------------------------------------------------ US AQI vectors


@pytest.mark.parametrize(
    ("pollutant", "conc", "index", "category"),
    [
        ("pm2_5_24h", 35.0, 99, "Moderate"),
        ("pm2_5_24h", 9.0, 50, "Good"),
        ("pm2_5_24h", 9.1, 51, "Moderate"),
        ("pm2_5_24h", 12.0, 56, "Moderate"),
        ("pm2_5_24h", 35.49, 100, "Moderate"),
        ("pm2_5_24h", 55.5, 151, "Unhealthy"),
        ("pm2_5_24h", 150.0, 225, "Very Unhealthy"),
        ("pm2_5_24h", 300.0, 449, "Hazardous"),
        ("pm10_24h", 155.9, 101, "Unhealthy for Sensitive Groups"),
        ("o3_8h", 0.0874125, 154, "Unhealthy"),
        ("co_8h", 8.4, 90, "Moderate"),
        ("no2_1h", 120, 105, "Unhealthy for Sensitive Groups"),
    ],
)
def test_spec_vectors(pollutant: str, conc: float, index: int, category: str) -> None:
    assert us_subindex(pollutant, conc) == index
    assert us_category(index) == category


@pytest.mark.parametrize(
    ("conc", "expected"),
    [(35.49, 35.4), (9.1, 9.1), (9.09, 9.0), (0.7, 0.7), (225.45, 225.4), (0.0, 0.0)],
)
def test_pm25_is_truncated_not_rounded(conc: float, expected: float) -> None:
    assert truncate("pm2_5_24h", conc) == expected


def test_values_between_rows_cannot_fall_into_the_gap() -> None:
    # 9.05 truncates to 9.0 (Good, 50); 35.45 to 35.4 (100); 55.49 to 55.4 (150).
    assert us_subindex("pm2_5_24h", 9.05) == 50
    assert us_subindex("pm2_5_24h", 35.45) == 100
    assert us_subindex("pm2_5_24h", 55.49) == 150
    assert us_subindex("pm10_24h", 54.9) == 50


def test_row_edges_give_the_row_index_bounds() -> None:
    for lo, hi, i_lo, i_hi in [
        (0.0, 9.0, 0, 50),
        (9.1, 35.4, 51, 100),
        (35.5, 55.4, 101, 150),
        (55.5, 125.4, 151, 200),
        (125.5, 225.4, 201, 300),
        (225.5, 325.4, 301, 500),
    ]:
        assert us_subindex("pm2_5_24h", lo) == i_lo
        assert us_subindex("pm2_5_24h", hi) == i_hi


def test_rounding_is_half_up() -> None:
    # Exact halves with an even integer part, where Python's round() would go down:
    # CO 1.1 ppm -> 50 / 4.4 * 1.1 = 12.5; 8-h O3 0.072 ppm -> 101 + 49 / 14 * 1 = 104.5.
    assert us_subindex("co_8h", 1.1) == 13
    assert us_subindex("o3_8h", 0.072) == 105
    assert us_subindex("no2_1h", 77) == 76  # 75.5
    assert aqi.round_half_up(2.5) == 3
    assert aqi.round_half_up(0.49) == 0


def test_beyond_the_aqi_extends_the_top_row() -> None:
    assert us_subindex("pm2_5_24h", 325.4) == 500
    above = us_subindex("pm2_5_24h", 400.0)
    assert above is not None and above > 500
    assert us_category(above) == "Beyond the AQI"


def test_averaging_periods_that_do_not_define_an_index() -> None:
    assert us_subindex("o3_8h", 0.200) == 300
    assert us_subindex("o3_8h", 0.201) is None  # 8-h O3 stops at 300: use 1-h O3
    assert us_subindex("o3_1h", 0.124) is None  # 1-h O3 starts at 101
    assert us_subindex("o3_1h", 0.125) == 101
    assert us_subindex("so2_1h", 304) == 200
    assert us_subindex("so2_1h", 305) is None  # 1-h SO2 stops at 200: use 24-h SO2
    assert us_subindex("so2_24h", 305) == 201


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_bad_concentrations_raise_value_error(bad: float) -> None:
    with pytest.raises(ValueError):
        us_subindex("pm2_5_24h", bad)


def test_unknown_pollutant() -> None:
    with pytest.raises(ValueError, match="unknown pollutant"):
        us_subindex("pm25", 10.0)


def test_overall_is_the_worst_sub_index() -> None:
    result = aqi_us({"pm2_5_24h": 12.0, "pm10_24h": 155.9, "o3_8h": 0.3})
    assert result == AqiResult(101, "Unhealthy for Sensitive Groups", "pm10_24h")
    assert aqi_us({"o3_8h": 0.3}) is None
    assert aqi_us({}) is None


# ------------------------------------------------------------------ NowCast

EPA_EXAMPLE = [13, 16, 10, 21, 74, 64, 53, 82, 90, 75, 80, 50]


def test_epa_nowcast_example() -> None:
    assert nowcast_weight(EPA_EXAMPLE) == 0.5
    value = nowcast(EPA_EXAMPLE)
    assert value is not None
    assert truncate("pm2_5_24h", value) == 17.4
    assert us_subindex("pm2_5_24h", value) == 66


def test_steady_series() -> None:
    # The spec elides its "steady series"; this one has cmax 22, cmin 18 as its w implies.
    series = [20.5, 22, 18, 20, 20, 20, 20, 20, 20, 20, 20, 20]
    assert nowcast_weight(series) == pytest.approx(0.8182, abs=1e-4)
    value = nowcast(series)
    assert value is not None
    assert truncate("pm2_5_24h", value) == 20.1
    assert us_subindex("pm2_5_24h", value) == 71


def test_nowcast_needs_two_of_the_last_three_hours() -> None:
    assert nowcast([None, 30, None, 30, 30, 30, 30, 30, 30, 30, 30, 30]) is None
    assert nowcast([math.nan, math.nan, 30, 30]) is None
    assert nowcast([30, None, 30]) == 30
    assert nowcast([None, 30, 30]) == 30
    assert nowcast([]) is None


def test_missing_hours_leave_both_sums() -> None:
    # w = 0.5 (cmax 40, cmin 10): (10 + 0.5*20 + 0.125*40) / (1 + 0.5 + 0.125)
    value = nowcast([10, 20, None, 40])
    assert value == pytest.approx((10 + 10 + 5) / 1.625)


def test_equal_hours_give_the_plain_mean_and_zero_is_fine() -> None:
    assert nowcast([12.0] * 12) == 12.0
    assert nowcast([0.0] * 12) == 0.0
    assert nowcast_weight([0.0, 0.0]) == 1.0


def test_only_twelve_hours_count() -> None:
    assert nowcast([10.0] * 12 + [1000.0]) == 10.0


# ------------------------------------------------------------------ India NAQI


def test_naqi_vectors() -> None:
    assert round(naqi_subindex("pm2_5", 45), 1) == 74.7
    assert naqi_subindex("pm2_5", 31) == 51.0
    assert naqi_subindex("pm2_5", 60) == 100.0
    assert naqi_subindex("pm10", 180) == pytest.approx(153.49, abs=0.005)


def test_naqi_overall_needs_three_pollutants_with_a_pm() -> None:
    subs = {"pm2_5": naqi_subindex("pm2_5", 45), "pm10": naqi_subindex("pm10", 180), "no2": 40}
    assert aqi_in(subs) == AqiResult(153, "Moderately polluted", "pm10")
    assert aqi_in({"pm2_5": 74.7, "pm10": 153.49}) is None
    assert aqi_in({"no2": 40, "so2": 20, "co": 60}) is None  # no PM
    assert aqi_in({"pm2_5": 74.7}, min_pollutants=1) == AqiResult(75, "Satisfactory", "pm2_5")


def test_naqi_from_concentrations() -> None:
    result = aqi_in_from_concentrations({"pm2_5": 45, "pm10": 180, "no2": 32})
    assert result == AqiResult(153, "Moderately polluted", "pm10")


def test_naqi_gaps_belong_to_the_lower_band_and_the_top_is_capped() -> None:
    assert naqi_subindex("pm2_5", 30) == 50.0
    assert naqi_subindex("pm2_5", 30.5) == 50.0
    assert naqi_subindex("co", 1.05) == 50.0
    assert naqi_subindex("pm2_5", 250) == 400.0
    assert 400 < naqi_subindex("pm2_5", 300) < 500
    assert naqi_subindex("pm2_5", 5000) == 500.0
    assert aqi.naqi_category(500) == "Severe"


# ------------------------------------------------------------------ UK DAQI


@pytest.mark.parametrize(
    ("conc", "index"), [(10, 1), (35, 3), (36, 4), (53, 6), (70, 9), (71, 10), (11.9, 1), (0, 1)]
)
def test_daqi_pm25_vectors(conc: float, index: int) -> None:
    assert daqi_uk_pm2_5(conc) == index


def test_daqi_pm10_and_bands() -> None:
    assert [daqi_uk_pm10(c) for c in (16, 17, 50, 51, 100, 101)] == [1, 2, 3, 4, 9, 10]
    assert [daqi_band(i) for i in (1, 3, 4, 6, 7, 9, 10)] == [
        "Low", "Low", "Moderate", "Moderate", "High", "High", "Very High",
    ]  # fmt: skip


# ------------------------------------------------------------------ properties

_DEFINED = {
    "pm2_5_24h": 600.0,
    "pm10_24h": 1000.0,
    "o3_8h": 0.200,
    "co_8h": 80.0,
    "so2_24h": 1500.0,
    "no2_1h": 3000.0,
}


@given(
    pollutant=st.sampled_from(sorted(_DEFINED)),
    a=st.floats(0, 1, allow_nan=False),
    b=st.floats(0, 1, allow_nan=False),
)
def test_us_aqi_is_monotonic_in_concentration(pollutant: str, a: float, b: float) -> None:
    top = _DEFINED[pollutant]
    lo, hi = sorted((a * top, b * top))
    i_lo, i_hi = us_subindex(pollutant, lo), us_subindex(pollutant, hi)
    assert i_lo is not None and i_hi is not None
    assert i_lo <= i_hi


@given(st.floats(0, 325.4, allow_nan=False))
def test_pm25_category_matches_the_breakpoint_table(c: float) -> None:
    index = us_subindex("pm2_5_24h", c)
    assert index is not None and 0 <= index <= 500
    t = truncate("pm2_5_24h", c)
    expected = (
        "Good" if t <= 9.0
        else "Moderate" if t <= 35.4
        else "Unhealthy for Sensitive Groups" if t <= 55.4
        else "Unhealthy" if t <= 125.4
        else "Very Unhealthy" if t <= 225.4
        else "Hazardous"
    )  # fmt: skip
    assert us_category(index) == expected


@given(
    pollutant=st.sampled_from(aqi.NAQI_POLLUTANTS),
    a=st.floats(0, 5000, allow_nan=False),
    b=st.floats(0, 5000, allow_nan=False),
)
def test_naqi_is_monotonic_and_bounded(pollutant: str, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    s_lo, s_hi = naqi_subindex(pollutant, lo), naqi_subindex(pollutant, hi)
    assert 0 <= s_lo <= s_hi <= 500


@given(st.lists(st.one_of(st.none(), st.floats(0, 1000, allow_nan=False)), max_size=14))
def test_nowcast_lies_between_the_valid_hours(hours: list[float | None]) -> None:
    value = nowcast(hours)
    valid = [h for h in hours[:12] if h is not None]
    if sum(h is not None for h in hours[:3]) < 2:
        assert value is None
    else:
        assert value is not None
        assert min(valid) - 1e-9 <= value <= max(valid) + 1e-9
