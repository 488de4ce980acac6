"""Built-in rule packs, on by default: indoor air and the RC LiPo/thermal ladder.

`air` follows specs/air-quality.md §4 (the hub default CO2 ladder: EN 13779 classes plus the UBA
"unacceptable" line; Sensirion's VOC index bands; EPA/ASHRAE humidity; Awair's temperature
band) and the US AQI categories. `rc` is `hub.derive.rc_thresholds` (specs/esc-telemetry.md §6)
turned into rules, plus a rate rule for an ESC heating fast. Every built-in rule can be changed
or switched off by id under `alerts.overrides`, or replaced by a user rule with the same id.
"""

from __future__ import annotations

from typing import Any

from hub.alerts.rules import AlertsConfig, RuleConfig
from hub.derive.rc_thresholds import rc_threshold_rules

_AIR = "specs/air-quality.md §4"


def _rule(**kwargs: Any) -> RuleConfig:
    for_s = kwargs.pop("for_s", 0.0)
    return RuleConfig.model_validate({**kwargs, "for": for_s})


def air_pack() -> list[RuleConfig]:
    return [
        _rule(
            id="air_co2_high", metric="co2", comparison=">", threshold=1400, clear=1300,
            for_s=120, severity="warning", name="CO2 high",
            message="{device}: CO2 reached {value:.0f} ppm (> {threshold:.0f} ppm, EN 13779 IDA4): ventilate",
            source=f"{_AIR}: hub default red 1400-2000 ppm (EN 13779 IDA4 above 1400)",
        ),
        _rule(
            id="air_co2_critical", metric="co2", comparison=">", threshold=2000, clear=1800,
            for_s=60, severity="critical", name="CO2 critical",
            message="{device}: CO2 reached {value:.0f} ppm (> {threshold:.0f} ppm): unacceptable (UBA)",
            source=f"{_AIR}: UBA 2008 guide value, > 2000 ppm unacceptable",
        ),
        _rule(
            id="air_pm2_5_aqi_unhealthy_sensitive", metric="aqi_us_nowcast", comparison=">",
            threshold=100, clear=90, for_s=600, severity="warning",
            name="PM2.5 unhealthy for sensitive groups",
            message="{device}: PM2.5 NowCast AQI reached {value:.0f} (> {threshold:.0f}): unhealthy for sensitive groups",
            source="US EPA AQI categories (101-150 unhealthy for sensitive groups)",
        ),
        _rule(
            id="air_pm2_5_aqi_unhealthy", metric="aqi_us_nowcast", comparison=">",
            threshold=150, clear=140, for_s=600, severity="critical", name="PM2.5 unhealthy",
            message="{device}: PM2.5 NowCast AQI reached {value:.0f} (> {threshold:.0f}): unhealthy",
            source="US EPA AQI categories (151-200 unhealthy)",
        ),
        _rule(
            id="air_voc_high", metric="voc_index", comparison=">", threshold=250, clear=200,
            for_s=300, severity="warning", name="VOC high",
            message="{device}: VOC index reached {value:.0f} (> {threshold:.0f}, 100 = typical): high",
            source=f"{_AIR}: Sensirion bands, 251-400 high [unverified]",
        ),
        _rule(
            id="air_voc_very_high", metric="voc_index", comparison=">", threshold=400, clear=350,
            for_s=120, severity="critical", name="VOC very high",
            message="{device}: VOC index reached {value:.0f} (> {threshold:.0f}): very high",
            source=f"{_AIR}: Sensirion bands, > 400 very high [unverified]",
        ),
        _rule(
            id="air_humidity_high", metric="humidity", comparison=">", threshold=60, clear=55,
            for_s=1800, severity="warning", name="Humidity high",
            message="{device}: humidity reached {value:.0f} % (> {threshold:.0f} %): mould risk",
            source=f"{_AIR}: EPA/ASHRAE keep below 60 % RH",
        ),
        _rule(
            id="air_humidity_low", metric="humidity", comparison="<", threshold=30, clear=35,
            for_s=1800, severity="info", name="Humidity low",
            message="{device}: humidity fell to {value:.0f} % (< {threshold:.0f} %): dry air",
            source=f"{_AIR}: comfort above ~30 % RH",
        ),
        _rule(
            id="air_temperature_high", metric="temperature", comparison=">", threshold=26,
            clear=25, for_s=1800, severity="info", name="Too warm",
            message="{device}: temperature reached {value:.1f} °C (> {threshold:.0f} °C): outside the comfort band",
            source=f"{_AIR}: Awair index-1 band 17-26 °C",
        ),
        _rule(
            id="air_temperature_low", metric="temperature", comparison="<", threshold=17,
            clear=18, for_s=1800, severity="info", name="Too cold",
            message="{device}: temperature fell to {value:.1f} °C (< {threshold:.0f} °C): outside the comfort band",
            source=f"{_AIR}: Awair index-1 band 17-26 °C",
        ),
        _rule(
            id="air_node_stale", kind="stale", metric=["co2", "pm2_5", "temperature"],
            stale_after=300, severity="warning", name="No recent readings",
            message="{device}: no {metric} reading for 5 minutes",
            source="hub default: ESPHome nodes report every 10-60 s",
        ),
        _rule(
            id="device_offline", kind="offline", for_s=60, severity="warning",
            name="Offline", message="{device} is offline",
            source="hub default: availability (LWT / native API) offline for 1 minute",
        ),
    ]  # fmt: skip


# Classes by rules.default_device_class (cell/pack voltage under a limit: `battery`, reads
# "Low"; temperatures: `heat`), except where that reads wrong: a pack left above storage
# voltage is a problem, not a hot or a low battery.
_RC_CLASSES = {"rc_storage_low": "battery", "rc_storage_high": "problem"}
# Home Assistant names where the id does not read as one (the rest: ids humanized).
_RC_NAMES = {
    "rc_cell_min_critical": "Weakest cell critical",
    "rc_cell_over_charge": "Cell over-charged",
    "rc_pack_over_charge": "Pack over-charged",
    "rc_cell_imbalance_rest": "Cells unbalanced at rest",
    "rc_cell_imbalance_rest_alarm": "Cells badly unbalanced",
    "rc_cell_imbalance_load": "Cells unbalanced under load",
    "rc_storage_low": "Below storage voltage",
    "rc_storage_high": "Above storage voltage",
}


def rc_pack(chemistry: str = "lipo") -> list[RuleConfig]:
    rules = [
        _rule(
            id=t.id, metric=t.metric, comparison=t.comparison, threshold=t.threshold,
            clear=t.clear_threshold, for_s=t.for_s, severity=t.severity, message=t.message,
            source=t.source, device_class=_RC_CLASSES.get(t.id), name=_RC_NAMES.get(t.id),
        )
        for t in rc_threshold_rules(chemistry)  # type: ignore[arg-type]
    ]  # fmt: skip
    rules.append(
        _rule(
            id="rc_esc_temperature_rising", kind="rate", metric="esc_temperature",
            comparison=">", threshold=2.0, clear=1.0, window=5, severity="warning",
            device_class="heat", name="ESC heating fast",
            message="{device}: ESC temperature rose {value:.1f} °C/s (> {threshold:.0f} °C/s)",
            source="hub default [INFERRED]: a healthy ESC warms by well under 1 °C/s",
        )
    )  # fmt: skip
    return rules


def effective_rules(config: AlertsConfig) -> list[RuleConfig]:
    """Packs (with overrides applied), then user rules; a user rule replaces a pack rule by id.

    Disabled rules are left out. Raises ValueError for an override naming an unknown rule.
    """
    builtin: dict[str, RuleConfig] = {}
    if config.packs.air:
        builtin.update((r.id, r) for r in air_pack())
    if config.packs.rc:
        builtin.update((r.id, r) for r in rc_pack(config.packs.rc_chemistry))
    known = set(builtin) | {r.id for r in all_builtin_rules()}
    for rule_id, override in config.overrides.items():
        if rule_id not in known:
            raise ValueError(f"alerts.overrides names unknown built-in rule {rule_id!r}")
        base = builtin.get(rule_id)
        if base is None:
            continue  # its pack is switched off
        changes = override.model_dump(exclude_none=True, by_alias=True)
        if changes:
            data = base.model_dump(by_alias=True)
            data.update(changes)
            builtin[rule_id] = RuleConfig.model_validate(data)
    merged = dict(builtin)
    for rule in config.rules:
        merged[rule.id] = rule
    return [r for r in merged.values() if r.enabled]


def all_builtin_rules() -> list[RuleConfig]:
    return [*air_pack(), *rc_pack()]
