"""The per-node air-quality filter: raw readings in, derived readings out.

`AirFilter` is fed one node's `Reading`s (pm2_5, pm10, co2, voc_index, nox_index, temperature,
humidity) in time order and returns the derived `Reading`s they complete. It has no clock of its
own: time is the readings' `timestamp_ms` (and `advance(now_ms)` for a node that went quiet).

Hourly (emitted when an hour closes, stamped with the hour's end, so a replay lands on the
same keys):
* `pm2_5_corrected` (tag `correction`): the configured EPA correction of the hourly means
* `pm2_5_nowcast`, `aqi_us_nowcast`: NowCast over the last 12 hourly means (PM10 NowCast joins
  the AQI when the node reports PM10)
* `aqi_us`: from the rolling 24-h mean of hourly means (valid with >= 18 valid hours)
* `aqi_in`: India NAQI from the same 24-h means (needs 3 pollutants by default, see settings)

Instant (from the latest fresh inputs, at most once per `instant_interval`, each group as soon
as its inputs are there: the dew point from the first temperature + humidity pair, even when a
comfort score went out a moment before):
* `dew_point`, `absolute_humidity`
* `comfort_score` (needs >= 2 of its factors)

An hourly mean counts only when enough of the hour's slots hold a sample (`min_hour_coverage`);
an hour closes when a reading arrives `hour_grace` after its end. Memory is bounded: at most two
open hours of running sums and 24 hourly means per input, whatever the stream does.

Bad input never raises: it is counted in `rejected` by reason and dropped.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from operator import floordiv
from typing import Final

from hub.derive import aqi as aqi_mod
from hub.derive.air_settings import AirNodeSettings, AirSettings
from hub.derive.comfort import COMFORT_CURVES, absolute_humidity, comfort_score, dew_point
from hub.derive.corrections import CORRECTIONS
from hub.model import CATALOG, Reading

__all__ = ["INPUT_METRICS", "AirDerivers", "AirFilter"]

log = logging.getLogger(__name__)

HOUR_MS: Final = 3_600_000
INPUT_METRICS: Final = frozenset(
    {"pm2_5", "pm10", "co2", "voc_index", "nox_index", "temperature", "humidity"}
)

# Rejection reasons (counted in `AirFilter.rejected`).
WRONG_DEVICE: Final = "wrong_device"
NOT_FINITE: Final = "not_finite"
OUT_OF_RANGE: Final = "out_of_range"
LATE: Final = "late"
TOO_MANY_NODES: Final = "too_many_nodes"

_RANGES: Final[Mapping[str, tuple[float, float]]] = {
    "pm2_5": (0.0, 10_000.0),
    "pm10": (0.0, 10_000.0),
    "co2": (0.0, 100_000.0),
    "voc_index": (0.0, 500.0),
    "nox_index": (0.0, 500.0),
    "temperature": (-60.0, 100.0),
    "humidity": (0.0, 100.0),
}

# Hourly channels: pm2_5 / pm10 as selected, humidity, and the correction's input series.
_CF: Final = "cf"
_HOURLY: Final = ("pm2_5", "pm10", "humidity", _CF)
_COMFORT_MIN_FACTORS: Final = 2


class _Acc:
    """Running sum of one channel in one hour, with the slots that saw a sample."""

    __slots__ = ("count", "slots", "total")

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0
        self.slots = 0  # bit i set = slot i of the hour had a sample


class AirFilter:
    """Derives air-quality readings for one node. Feed readings in time order."""

    def __init__(self, device: str, settings: AirNodeSettings | None = None) -> None:
        self.device = device
        self.settings = s = settings if settings is not None else AirNodeSettings()
        self.rejected: Counter[str] = Counter()
        self._slot_ms = max(60_000, round(s.sample_interval * 1000))
        n_slots = math.ceil(HOUR_MS / self._slot_ms)
        self._need_slots = max(1, math.ceil(s.min_hour_coverage * n_slots - 1e-9))
        self._grace_ms = round(s.hour_grace * 1000)
        self._instant_ms = round(s.instant_interval * 1000)
        self._max_age_ms = round(s.max_age * 1000)
        self._want = dict(s.sensors)
        self._correction = None if s.correction == "none" else CORRECTIONS[s.correction]
        self._cf_sensor = s.correction_input if s.correction_input else self._want.get("pm2_5")
        self._instant_on = s.psychrometrics or s.comfort_score
        # hour index -> channel -> accumulator; at most two hours are open at once
        self._open: dict[int, dict[str, _Acc]] = {}
        self._next_close_ms: int | None = None  # when the oldest open hour closes
        self._closed_through: int | None = None  # last hour index closed
        self._hist: dict[str, deque[float | None]] = {
            name: deque(maxlen=24) for name in (*_HOURLY, "pm2_5_corrected")
        }
        self._latest: dict[str, tuple[int, float]] = {}
        # when each instant group ("psychrometrics", "comfort") last went out
        self._last_instant_ms: dict[str, int] = {}

    # ------------------------------------------------------------------ input

    def feed(self, reading: Reading) -> list[Reading]:
        """Take one reading; return the derived readings it completes (often none)."""
        metric = reading.metric
        if metric not in INPUT_METRICS:
            return []
        if reading.device != self.device:
            return self._reject(WRONG_DEVICE, reading)
        value = reading.value
        if not isinstance(value, int | float) or not math.isfinite(value):
            return self._reject(NOT_FINITE, reading)
        lo, hi = _RANGES[metric]
        if not lo <= value <= hi:
            return self._reject(OUT_OF_RANGE, reading)
        sensor = reading.tags.get("sensor")
        want = self._want.get(metric)
        selected = want is None or sensor == want
        is_cf = (
            metric == "pm2_5"
            and self._correction is not None
            and (self._cf_sensor is None or sensor == self._cf_sensor)
        )
        if not selected and not is_cf:
            return []
        ts = reading.timestamp_ms
        hour = ts // HOUR_MS
        if self._closed_through is not None and hour <= self._closed_through:
            return self._reject(LATE, reading)

        out: list[Reading] = []
        if self._next_close_ms is not None and ts >= self._next_close_ms:
            out.extend(self.advance(ts))
        if metric in ("pm2_5", "pm10", "humidity") and selected:
            self._add(hour, metric, ts, value)
        if is_cf:
            self._add(hour, _CF, ts, value)
        if selected and self._instant_on:
            self._latest[metric] = (ts, value)
            out.extend(self._instant(ts))
        return out

    def advance(self, now_ms: int) -> list[Reading]:
        """Close every open hour that ended (plus the grace) by `now_ms`; return what it made.

        `feed` calls this itself; the service calls it on a timer so a node that went silent
        still gets its last hours closed.
        """
        out: list[Reading] = []
        for hour in sorted(self._open):
            if (hour + 1) * HOUR_MS + self._grace_ms > now_ms:
                break
            out.extend(self._close(hour, self._open.pop(hour)))
        self._next_close_ms = (
            (min(self._open) + 1) * HOUR_MS + self._grace_ms if self._open else None
        )
        return out

    def _add(self, hour: int, channel: str, ts: int, value: float) -> None:
        chans = self._open.get(hour)
        if chans is None:
            chans = self._open[hour] = {}
            close_at = (hour + 1) * HOUR_MS + self._grace_ms
            if self._next_close_ms is None or close_at < self._next_close_ms:
                self._next_close_ms = close_at
        acc = chans.get(channel)
        if acc is None:
            acc = chans[channel] = _Acc()
        acc.total += value
        acc.count += 1
        acc.slots |= 1 << (ts // self._slot_ms - hour * HOUR_MS // self._slot_ms)

    def feed_hourly_columns(
        self,
        columns: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    ) -> list[Reading]:
        """The batch path: whole time-sorted columns of one node in, the hourly outputs out.

        `columns` maps an hourly input (`pm2_5`, `pm10`, `humidity`, and `cf` for the
        correction's input when it is another series) to (timestamps_ms, values), each sorted
        by time and already checked. Gives the same hourly readings as feeding the samples one
        by one (the instant outputs are not made), about ten times faster: the sums and the
        slot counts run in C (`sum`, `set(map(...))`) over the slices of each hour.
        """
        hourly: dict[int, dict[str, float | None]] = {}
        for channel, (stamps, values) in columns.items():
            if channel not in _HOURLY:
                raise ValueError(f"unknown hourly input {channel!r}; known: {', '.join(_HOURLY)}")
            for hour, mean in _hourly_means(stamps, values, self._slot_ms, self._need_slots):
                hourly.setdefault(hour, {})[channel] = mean
        if _CF not in columns and self._correction is not None and "pm2_5" in columns:
            for means in hourly.values():
                means[_CF] = means.get("pm2_5")
        out: list[Reading] = []
        for hour in sorted(hourly):
            if self._closed_through is not None and hour <= self._closed_through:
                self.rejected[LATE] += 1
                continue
            out.extend(self._close_means(hour, hourly[hour]))
        return out

    def _reject(self, reason: str, reading: Reading) -> list[Reading]:
        self.rejected[reason] += 1
        log.debug(
            "Air filter %s dropped %s=%r at %d: %s",
            self.device,
            reading.metric,
            reading.value,
            reading.timestamp_ms,
            reason,
        )
        return []

    # ------------------------------------------------------------------ hourly outputs

    def _mean(self, acc: _Acc | None) -> float | None:
        if acc is None or acc.slots.bit_count() < self._need_slots:
            return None
        return acc.total / acc.count

    def _close(self, hour: int, chans: dict[str, _Acc]) -> list[Reading]:
        return self._close_means(hour, {name: self._mean(chans.get(name)) for name in _HOURLY})

    def _close_means(self, hour: int, means: Mapping[str, float | None]) -> list[Reading]:
        s = self.settings
        # Hours nobody reported in are missing hours for the NowCast and the 24-h mean.
        if self._closed_through is not None:
            gap = min(hour - self._closed_through - 1, 24)
            for _ in range(gap):
                for dq in self._hist.values():
                    dq.append(None)
        self._closed_through = hour
        for name in _HOURLY:
            self._hist[name].append(means.get(name))

        end_ms = (hour + 1) * HOUR_MS
        out: list[Reading] = []
        corrected: float | None = None
        if self._correction is not None:
            cf, rh = means.get(_CF), means.get("humidity")
            if cf is not None and rh is not None:
                corrected = self._correction(cf, rh)
                out.append(
                    self._reading(
                        "pm2_5_corrected",
                        round(corrected, 2),
                        end_ms,
                        {"correction": s.correction},
                    )
                )
        self._hist["pm2_5_corrected"].append(corrected)
        pm25 = self._hist["pm2_5_corrected" if s.use_corrected else "pm2_5"]
        pm10 = self._hist["pm10"]

        if s.aqi_us_nowcast:
            out.extend(self._nowcast(pm25, pm10, end_ms))
        if s.aqi_us or s.aqi_in:
            m25 = _mean_if(pm25, s.min_hours_24h)
            m10 = _mean_if(pm10, s.min_hours_24h)
            if s.aqi_us:
                conc = {}
                if m25 is not None:
                    conc["pm2_5_24h"] = m25
                if m10 is not None:
                    conc["pm10_24h"] = m10
                result = aqi_mod.aqi_us(conc)
                if result is not None:
                    out.append(self._reading("aqi_us", float(result.value), end_ms))
            if s.aqi_in:
                subs = {}
                for name, dq in (("pm2_5", pm25), ("pm10", pm10)):
                    mean = _mean_if(dq, s.min_hours_24h_in)
                    if mean is not None:
                        subs[name] = aqi_mod.naqi_subindex(name, mean)
                result = aqi_mod.aqi_in(subs, s.aqi_in_min_pollutants)
                if result is not None:
                    out.append(self._reading("aqi_in", float(result.value), end_ms))
        return out

    def _nowcast(
        self, pm25: deque[float | None], pm10: deque[float | None], end_ms: int
    ) -> list[Reading]:
        out: list[Reading] = []
        best: int | None = None
        nc25 = aqi_mod.nowcast(_newest_first(pm25))
        if nc25 is not None:
            out.append(self._reading("pm2_5_nowcast", aqi_mod.truncate("pm2_5_24h", nc25), end_ms))
            best = aqi_mod.us_subindex("pm2_5_24h", nc25)
        nc10 = aqi_mod.nowcast(_newest_first(pm10))
        if nc10 is not None:
            sub10 = aqi_mod.us_subindex("pm10_24h", nc10)
            if sub10 is not None and (best is None or sub10 > best):
                best = sub10
        if best is not None:
            out.append(self._reading("aqi_us_nowcast", float(best), end_ms))
        return out

    # ------------------------------------------------------------------ instant outputs

    def _due(self, group: str, now: int) -> bool:
        last = self._last_instant_ms.get(group)
        return last is None or now - last >= self._instant_ms or now < last

    def _instant(self, now: int) -> list[Reading]:
        s = self.settings
        psychro = s.psychrometrics and self._due("psychrometrics", now)
        comfort = s.comfort_score and self._due("comfort", now)
        if not (psychro or comfort):
            return []
        fresh = {
            metric: value
            for metric, (ts, value) in self._latest.items()
            if abs(now - ts) <= self._max_age_ms
        }
        out: list[Reading] = []
        t, rh = fresh.get("temperature"), fresh.get("humidity")
        if psychro and t is not None and rh is not None and rh > 0:
            out.append(self._reading("dew_point", round(dew_point(t, rh), 2), now))
            out.append(self._reading("absolute_humidity", round(absolute_humidity(t, rh), 2), now))
            self._last_instant_ms["psychrometrics"] = now
        if comfort:
            factors = {m: v for m, v in fresh.items() if m in COMFORT_CURVES}
            if len(factors) >= _COMFORT_MIN_FACTORS:
                score = comfort_score(factors)
                if score is not None:
                    out.append(self._reading("comfort_score", float(score), now))
                    self._last_instant_ms["comfort"] = now
        return out

    def _reading(
        self, metric: str, value: float, ts: int, tags: Mapping[str, str] | None = None
    ) -> Reading:
        spec = CATALOG.get(metric)
        return Reading(
            device=self.device,
            metric=metric,
            value=value,
            timestamp_ms=ts,
            unit=spec.unit if spec is not None else None,
            tags=tags if tags is not None else {},
            source="derived",
        )


def _hourly_means(
    stamps: Sequence[int], values: Sequence[float], slot_ms: int, need_slots: int
) -> Iterable[tuple[int, float | None]]:
    """(hour, mean or None) for each hour that has samples in a time-sorted column."""
    n = len(stamps)
    i = 0
    while i < n:
        hour = stamps[i] // HOUR_MS
        j = bisect_left(stamps, (hour + 1) * HOUR_MS, i, n)
        slots = len(set(map(floordiv, stamps[i:j], repeat(slot_ms))))
        yield hour, (sum(values[i:j]) / (j - i) if slots >= need_slots else None)
        i = j


def _newest_first(dq: deque[float | None]) -> list[float | None]:
    return [dq[-i] for i in range(1, min(12, len(dq)) + 1)]


def _mean_if(dq: deque[float | None], min_valid: int) -> float | None:
    valid = [v for v in dq if v is not None]
    if len(valid) < min_valid:
        return None
    return sum(valid) / len(valid)


class AirDerivers:
    """One `AirFilter` per node, made on first sight, with settings from `AirSettings`."""

    def __init__(self, settings: AirSettings | None = None, max_nodes: int = 256) -> None:
        self.settings = settings if settings is not None else AirSettings()
        self.max_nodes = max_nodes
        self.filters: dict[str, AirFilter] = {}
        self.rejected: Counter[str] = Counter()

    def feed(self, reading: Reading) -> list[Reading]:
        if not self.settings.enabled or reading.metric not in INPUT_METRICS:
            return []
        flt = self.filters.get(reading.device)
        if flt is None:
            if len(self.filters) >= self.max_nodes:
                self.rejected[TOO_MANY_NODES] += 1
                return []
            flt = self.filters[reading.device] = AirFilter(
                reading.device, self.settings.for_node(reading.device)
            )
        return flt.feed(reading)

    def feed_many(self, readings: Iterable[Reading]) -> list[Reading]:
        out: list[Reading] = []
        for reading in readings:
            out.extend(self.feed(reading))
        return out

    def advance(self, now_ms: int) -> list[Reading]:
        out: list[Reading] = []
        for flt in self.filters.values():
            out.extend(flt.advance(now_ms))
        return out

    def rejected_total(self) -> Counter[str]:
        """Rejections of every node, by reason."""
        total = Counter(self.rejected)
        for flt in self.filters.values():
            total.update(flt.rejected)
        return total
