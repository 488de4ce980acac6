"""The per-node air filter: hourly means, NowCast, 24-h AQI, corrections, instant values."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pytest
from pydantic import ValidationError

from hub.derive.air import HOUR_MS, AirDerivers, AirFilter
from hub.derive.air_settings import AirNodeSettings, AirSettings
from hub.model import Reading

T0 = 1_717_200_000_000  # 2024-06-01T00:00:00Z, an hour boundary
MIN = 60_000


def pm_hours(
    values: Sequence[float | None], device: str = "n1", sensor: str | None = None, start: int = T0
) -> list[Reading]:
    """One pm2_5 sample a minute, each hour at a constant value (None = a silent hour)."""
    tags = {"sensor": sensor} if sensor else {}
    out = []
    for h, v in enumerate(values):
        if v is None:
            continue
        out += [
            Reading(device, "pm2_5", v, start + h * HOUR_MS + m * MIN, tags=tags) for m in range(60)
        ]
    return out


def feed(flt: AirFilter, readings: Iterable[Reading], close: bool = True) -> list[Reading]:
    out: list[Reading] = []
    last = T0
    for r in sorted(readings, key=lambda r: r.timestamp_ms):
        out += flt.feed(r)
        last = r.timestamp_ms
    if close:
        out += flt.advance(last + 2 * HOUR_MS)
    return out


def by_metric(readings: Iterable[Reading], metric: str) -> list[tuple[int, float]]:
    return [(r.timestamp_ms, r.value) for r in readings if r.metric == metric]


def hourly_only() -> AirNodeSettings:
    return AirNodeSettings(psychrometrics=False, comfort_score=False)


def test_epa_nowcast_example_through_the_filter() -> None:
    epa_newest_first = [13, 16, 10, 21, 74, 64, 53, 82, 90, 75, 80, 50]
    out = feed(AirFilter("n1", hourly_only()), pm_hours(list(reversed(epa_newest_first))))
    end_of_12th_hour = T0 + 12 * HOUR_MS
    assert by_metric(out, "pm2_5_nowcast")[-1] == (end_of_12th_hour, 17.4)
    assert by_metric(out, "aqi_us_nowcast")[-1] == (end_of_12th_hour, 66.0)
    derived = [r for r in out if r.metric == "aqi_us_nowcast"]
    assert all(r.source == "derived" and r.device == "n1" and r.unit is None for r in derived)
    assert next(r for r in out if r.metric == "pm2_5_nowcast").unit == "µg/m³"


def test_24h_aqi_needs_18_valid_hours() -> None:
    out = feed(AirFilter("n1", hourly_only()), pm_hours([35.0] * 24))
    aqi = by_metric(out, "aqi_us")
    assert [ts for ts, _ in aqi] == [T0 + h * HOUR_MS for h in range(18, 25)]
    assert {v for _, v in aqi} == {99.0}


def test_24h_aqi_edges_from_hourly_means() -> None:
    for conc, index in [(9.0, 50.0), (9.1, 51.0), (12.0, 56.0), (55.5, 151.0), (150.0, 225.0)]:
        out = feed(AirFilter("n1", hourly_only()), pm_hours([conc] * 18))
        assert by_metric(out, "aqi_us") == [(T0 + 18 * HOUR_MS, index)]


def test_incomplete_hour_is_missing_and_nowcast_needs_two_of_three() -> None:
    flt = AirFilter("n1", hourly_only())
    readings = pm_hours([20.0, 20.0])
    # Third hour: only 30 of 60 minutes (below 75 %): a missing hour.
    readings += [Reading("n1", "pm2_5", 500.0, T0 + 2 * HOUR_MS + m * MIN) for m in range(30)]
    readings += pm_hours([40.0], start=T0 + 3 * HOUR_MS)
    out = feed(flt, readings)
    nc = dict(by_metric(out, "pm2_5_nowcast"))
    assert T0 + HOUR_MS not in nc  # one hour only: needs 2 of the last 3
    assert nc[T0 + 2 * HOUR_MS] == 20.0
    assert nc[T0 + 3 * HOUR_MS] == 20.0  # [None, 20, 20]: the 500s never count
    assert 20.0 < nc[T0 + 4 * HOUR_MS] < 40.0  # [40, None, 20, 20]


def test_a_long_silence_leaves_missing_hours() -> None:
    flt = AirFilter("n1", hourly_only())
    out = feed(flt, pm_hours([10.0] * 20))
    assert by_metric(out, "aqi_us")
    out = feed(flt, pm_hours([10.0] * 3, start=T0 + 50 * HOUR_MS))
    assert by_metric(out, "aqi_us") == []  # the 24-h window holds 3 valid hours
    assert [ts for ts, _ in by_metric(out, "pm2_5_nowcast")] == [
        T0 + 52 * HOUR_MS,
        T0 + 53 * HOUR_MS,
    ]
    assert all(len(dq) <= 24 for dq in flt._hist.values())


def test_correction_with_two_pms5003_series() -> None:
    settings = AirNodeSettings(
        correction="epa_2021",
        correction_input="pm_2_5_std",
        sensors={"pm2_5": "pm_2_5"},
        psychrometrics=False,
        comfort_score=False,
    )
    readings = pm_hours([20.0] * 3, sensor="pm_2_5_std") + pm_hours([7.0] * 3, sensor="pm_2_5")
    readings += [Reading("n1", "humidity", 50.0, T0 + m * MIN + 5) for m in range(180)]
    out = feed(AirFilter("n1", settings), readings)
    corrected = [r for r in out if r.metric == "pm2_5_corrected"]
    assert [r.value for r in corrected] == [11.92, 11.92, 11.92]
    assert all(dict(r.tags) == {"correction": "epa_2021"} for r in corrected)
    # aqi_input auto: the NowCast reads the corrected means, not the 7.0 ATM series.
    assert by_metric(out, "pm2_5_nowcast")[-1][1] == 11.9

    raw = AirFilter("n1", settings.model_copy(update={"aqi_input": "raw"}))
    assert by_metric(feed(raw, readings), "pm2_5_nowcast")[-1][1] == 7.0


def test_no_correction_without_humidity() -> None:
    out = feed(AirFilter("n1", AirNodeSettings(correction="epa_2021")), pm_hours([20.0] * 3))
    assert by_metric(out, "pm2_5_corrected") == []
    assert by_metric(out, "pm2_5_nowcast") == []  # auto: corrected series is empty


def test_unselected_sensor_is_ignored() -> None:
    flt = AirFilter("n1", AirNodeSettings(sensors={"pm2_5": "pm_2_5"}))
    out = feed(flt, pm_hours([50.0] * 3, sensor="pm_2_5_std"))
    assert out == []
    assert not flt.rejected


def test_bad_input_is_counted_never_raised() -> None:
    flt = AirFilter("n1")
    bad = [
        Reading("n1", "pm2_5", math.nan, T0),
        Reading("n1", "pm2_5", math.inf, T0),
        Reading("n1", "pm2_5", -3.0, T0),
        Reading("n1", "humidity", 120.0, T0),
        Reading("n1", "voc_index", 9000.0, T0),
        Reading("other", "pm2_5", 5.0, T0),
    ]
    for r in bad:
        assert flt.feed(r) == []
    assert flt.rejected == {"not_finite": 2, "out_of_range": 3, "wrong_device": 1}
    assert flt.feed(Reading("n1", "pressure", 1013.0, T0)) == []  # not an input: ignored


def test_late_readings_for_a_closed_hour_are_rejected() -> None:
    flt = AirFilter("n1", hourly_only())
    feed(flt, pm_hours([10.0, 10.0]), close=False)
    flt.feed(Reading("n1", "pm2_5", 10.0, T0 + 2 * HOUR_MS + 2 * MIN))  # closes hour 1
    assert flt.feed(Reading("n1", "pm2_5", 99.0, T0 + HOUR_MS + 5 * MIN)) == []
    assert flt.rejected["late"] == 1


def test_grace_lets_a_straggler_count_for_the_hour_it_belongs_to() -> None:
    flt = AirFilter("n1", hourly_only())
    feed(flt, pm_hours([10.0, 10.0]), close=False)
    assert flt.feed(Reading("n1", "pm2_5", 10.0, T0 + 2 * HOUR_MS + 10_000)) == []  # in grace
    flt.feed(Reading("n1", "pm2_5", 10.0, T0 + 2 * HOUR_MS - 1))  # straggler for hour 1
    assert not flt.rejected
    assert len(flt._open) == 2  # at most: the hour in grace and the current one


def test_advance_closes_a_silent_node() -> None:
    flt = AirFilter("n1", hourly_only())
    assert feed(flt, pm_hours([10.0, 10.0]), close=False) == []  # 1 hour closed: no NowCast
    assert flt.advance(T0 + 2 * HOUR_MS) == []  # still in grace
    out = flt.advance(T0 + 2 * HOUR_MS + 60_000)
    assert by_metric(out, "pm2_5_nowcast") == [(T0 + 2 * HOUR_MS, 10.0)]
    assert flt.advance(T0 + 10 * HOUR_MS) == []


def test_instant_values_are_throttled_and_need_fresh_inputs() -> None:
    flt = AirFilter("n1", AirNodeSettings(instant_interval=60, max_age=300))
    out = flt.feed(Reading("n1", "temperature", 20.0, T0))
    assert out == []  # one factor: no comfort score, no humidity: no dew point
    out = flt.feed(Reading("n1", "humidity", 50.0, T0 + 1000))
    assert {r.metric: r.value for r in out} == {
        "dew_point": 9.26,
        "absolute_humidity": 8.62,
        "comfort_score": 100.0,
    }
    assert flt.feed(Reading("n1", "humidity", 50.0, T0 + 30_000)) == []  # throttled
    out = flt.feed(Reading("n1", "co2", 1200.0, T0 + 61_000))
    assert {r.metric for r in out} == {"dew_point", "absolute_humidity", "comfort_score"}
    # 500 s on, everything else is older than max_age: CO2 alone makes nothing.
    assert flt.feed(Reading("n1", "co2", 1200.0, T0 + 500_000)) == []
    # Temperature now 10 min old: no dew point; comfort from humidity and CO2 only.
    out = flt.feed(Reading("n1", "humidity", 45.0, T0 + 600_000))
    assert [(r.metric, r.value) for r in out] == [("comfort_score", 68.0)]


def test_dew_point_comes_with_the_first_pair_even_after_a_comfort_score() -> None:
    # Issue #18: PM2.5 and CO2 came first and made a comfort score; the dew point then waited
    # a whole `instant_interval` for its turn although temperature and humidity were there.
    flt = AirFilter("n1", AirNodeSettings(instant_interval=60, max_age=300))
    assert flt.feed(Reading("n1", "pm2_5", 5.0, T0)) == []
    out = flt.feed(Reading("n1", "co2", 600.0, T0 + 100))
    assert [r.metric for r in out] == ["comfort_score"]
    assert flt.feed(Reading("n1", "temperature", 20.0, T0 + 200)) == []
    out = flt.feed(Reading("n1", "humidity", 50.0, T0 + 300))
    assert {r.metric: r.value for r in out} == {"dew_point": 9.26, "absolute_humidity": 8.62}
    # Each group keeps its own pace: nothing more within the minute.
    assert flt.feed(Reading("n1", "humidity", 51.0, T0 + 30_000)) == []
    out = flt.feed(Reading("n1", "humidity", 52.0, T0 + 60_100))
    assert {r.metric for r in out} == {"comfort_score"}
    out = flt.feed(Reading("n1", "humidity", 52.0, T0 + 60_300))
    assert {r.metric for r in out} == {"dew_point", "absolute_humidity"}


def test_disabled_outputs_are_not_made() -> None:
    settings = AirNodeSettings(
        aqi_us=False, aqi_us_nowcast=False, psychrometrics=False, comfort_score=False
    )
    readings = pm_hours([10.0] * 20) + [
        Reading("n1", "temperature", 20.0, T0 + m * MIN) for m in range(60)
    ]
    assert feed(AirFilter("n1", settings), readings) == []


def test_aqi_in_follows_its_pollutant_rule() -> None:
    only_pm = AirNodeSettings(aqi_in=True, psychrometrics=False, comfort_score=False)
    readings = pm_hours([45.0] * 16)
    assert by_metric(feed(AirFilter("n1", only_pm), readings), "aqi_in") == []
    one = only_pm.model_copy(update={"aqi_in_min_pollutants": 1})
    assert by_metric(feed(AirFilter("n1", one), readings), "aqi_in") == [(T0 + 16 * HOUR_MS, 75.0)]


def test_batch_path_equals_the_stream() -> None:
    settings = AirNodeSettings(correction="epa_2021", aqi_in=True, aqi_in_min_pollutants=1)
    settings = settings.model_copy(update={"psychrometrics": False, "comfort_score": False})
    stamps, pm, rh = [], [], []
    for m in range(3 * 24 * 60):
        if 1500 <= m < 1700 or (m % 60 > 40 and m // 60 == 30):
            continue  # an outage and an incomplete hour
        stamps.append(T0 + m * MIN + (m % 7) * 1000)
        pm.append(((m * 37) % 400) / 4)  # quarters: sums are exact in any order
        rh.append(((m * 13) % 160) / 2)
    stream_in = [Reading("n1", "pm2_5", v, t) for t, v in zip(stamps, pm, strict=True)]
    stream_in += [Reading("n1", "humidity", v, t) for t, v in zip(stamps, rh, strict=True)]
    stream = feed(AirFilter("n1", settings), stream_in)
    batch = AirFilter("n1", settings).feed_hourly_columns(
        {"pm2_5": (stamps, pm), "humidity": (stamps, rh)}
    )
    assert len(batch) > 100
    assert batch == stream


def test_batch_path_refuses_unknown_inputs() -> None:
    with pytest.raises(ValueError, match="unknown hourly input"):
        AirFilter("n1").feed_hourly_columns({"co2": ([T0], [400.0])})


def test_derivers_make_one_filter_per_node_with_its_settings() -> None:
    settings = AirSettings.model_validate(
        {
            "defaults": {"psychrometrics": False, "comfort_score": False},
            "nodes": {"balcony": {"aqi_us_nowcast": False}},
        }
    )
    hub = AirDerivers(settings, max_nodes=2)
    out = hub.feed_many(
        pm_hours([10.0] * 3, device="kitchen") + pm_hours([10.0] * 3, device="balcony")
    )
    out += hub.advance(T0 + 10 * HOUR_MS)
    assert {r.device for r in out if r.metric == "pm2_5_nowcast"} == {"kitchen"}
    assert hub.filters["balcony"].settings.psychrometrics is False  # default kept
    assert hub.feed(Reading("garage", "pm2_5", 5.0, T0)) == []
    assert hub.rejected_total() == {"too_many_nodes": 1}
    assert hub.feed(Reading("garage", "rpm", 5.0, T0)) == []  # not an air metric


def test_settings_validation() -> None:
    with pytest.raises(ValidationError, match="needs a `correction`"):
        AirNodeSettings(aqi_input="corrected")
    with pytest.raises(ValidationError):
        AirNodeSettings.model_validate({"corection": "epa_2021"})  # typo: unknown key
    with pytest.raises(ValidationError):
        AirNodeSettings.model_validate({"correction": "lrapa"})
    with pytest.raises(ValidationError):
        AirNodeSettings.model_validate({"min_hour_coverage": 0})
    s = AirNodeSettings.model_validate({"sample_interval": "5m", "hour_grace": "30s"})
    assert (s.sample_interval, s.hour_grace) == (300.0, 30.0)
    assert AirNodeSettings(correction="epa_2022").use_corrected
    assert not AirNodeSettings(correction="epa_2022", aqi_input="raw").use_corrected


def test_slow_nodes_use_wider_completeness_slots() -> None:
    # A node reporting every 5 minutes fills 12 of 12 slots, not 12 of 60 minutes.
    flt = AirFilter("n1", AirNodeSettings(sample_interval="5m", psychrometrics=False))
    readings = [
        Reading("n1", "pm2_5", 10.0, T0 + h * HOUR_MS + m * 5 * MIN)
        for h in range(3)
        for m in range(12)
    ]
    assert by_metric(feed(flt, readings), "pm2_5_nowcast") == [
        (T0 + 2 * HOUR_MS, 10.0),
        (T0 + 3 * HOUR_MS, 10.0),
    ]
