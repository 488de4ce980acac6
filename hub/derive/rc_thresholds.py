"""Built-in RC alert thresholds: the LiPo and thermal ladder of specs/esc-telemetry.md §6.

A typed table for the alert engine to load as a rule pack. Each rule fires when
`value <comparison> threshold` has held for `for_s` seconds and clears when the value is
back on the safe side of `clear_threshold` (hysteresis, so a pack hovering at 3.50 V does not
flap). Messages are `str.format` templates with `{device}`, `{value}`, `{threshold}` and
`{unit}`. `source` cites where the number comes from; [INFERRED] marks the spec author's
suggested ladder rather than a published limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hub.derive.lipo import Chemistry

Comparison = Literal["<", "<=", ">", ">="]
Severity = Literal["info", "warning", "critical"]

_SPEC = "specs/esc-telemetry.md §6"


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """One alert threshold on one metric."""

    id: str
    metric: str
    comparison: Comparison
    threshold: float
    clear_threshold: float
    for_s: float
    severity: Severity
    message: str
    source: str

    def breached(self, value: float) -> bool:
        return _compare(value, self.comparison, self.threshold)

    def cleared(self, value: float) -> bool:
        """True once the value is back past the clear threshold (the safe side)."""
        return not _compare(value, _INCLUSIVE[self.comparison], self.clear_threshold)


_INCLUSIVE: dict[Comparison, Comparison] = {"<": "<=", "<=": "<=", ">": ">=", ">=": ">="}


def _compare(value: float, comparison: Comparison, threshold: float) -> bool:
    if comparison == "<":
        return value < threshold
    if comparison == "<=":
        return value <= threshold
    if comparison == ">":
        return value > threshold
    return value >= threshold


def _over_charge(chemistry: Chemistry) -> tuple[ThresholdRule, ...]:
    limit, full = (4.22, 4.20) if chemistry == "lipo" else (4.37, 4.35)
    name = "LiPo" if chemistry == "lipo" else "LiHV"
    return (
        ThresholdRule(
            "rc_cell_over_charge",
            "cell_voltage_max",
            ">",
            limit,
            full,
            0.0,
            "critical",
            "{device}: a cell is at {value:.3f} {unit}, above {threshold:.2f} {unit}: "
            f"over-charged {name}, stop charging",
            f"{_SPEC} ladder (over-charge above {limit} V); full {full} V/cell [INFERRED margin]",
        ),
        ThresholdRule(
            "rc_pack_over_charge",
            "cell_voltage_avg",
            ">",
            limit,
            full,
            5.0,  # pack-voltage estimates carry ESC calibration error (HW V4: ~1.7 %)
            "critical",
            "{device}: pack averages {value:.3f} {unit}/cell, above {threshold:.2f} {unit}: "
            f"over-charged {name}",
            f"{_SPEC} ladder (over-charge above {limit} V) applied to the pack average",
        ),
    )


def rc_threshold_rules(chemistry: Chemistry = "lipo") -> tuple[ThresholdRule, ...]:
    """The RC rule pack for a LiPo (`lipo`) or high-voltage LiPo (`lihv`) pack."""
    return (
        ThresholdRule(
            "rc_cell_voltage_low",
            "cell_voltage_avg",
            "<",
            3.50,
            3.60,
            2.0,
            "warning",
            "{device}: {value:.2f} {unit}/cell under {threshold:.2f} {unit}: pack is getting low",
            f"{_SPEC} ladder (under load warn 3.5 V); Betaflight vbatwarningcellvoltage 3.50 V",
        ),
        ThresholdRule(
            "rc_cell_voltage_critical",
            "cell_voltage_avg",
            "<",
            3.30,
            3.40,
            2.0,
            "critical",
            "{device}: {value:.2f} {unit}/cell under {threshold:.2f} {unit}: stop now",
            f"{_SPEC} ladder (under load critical 3.3 V); Betaflight vbatmincellvoltage 3.30 V",
        ),
        ThresholdRule(
            "rc_cell_min_critical",
            "cell_voltage_min",
            "<",
            3.20,
            3.30,
            1.0,
            "critical",
            "{device}: weakest cell at {value:.2f} {unit}, under {threshold:.2f} {unit}: stop now",
            f"{_SPEC}: 'Do not discharge below 3.20V per cell under load' (commonsenserc.com)",
        ),
        *_over_charge(chemistry),
        ThresholdRule(
            "rc_cell_imbalance_rest",
            "cell_voltage_spread_rest",
            ">",
            0.05,
            0.04,
            10.0,
            "warning",
            "{device}: cells differ by {value:.3f} {unit} at rest (> {threshold:.2f} {unit}): "
            "balance-charge the pack",
            f"{_SPEC}: balanced within 0.05 V (commonsenserc.com); hub default [INFERRED]",
        ),
        ThresholdRule(
            "rc_cell_imbalance_rest_alarm",
            "cell_voltage_spread_rest",
            ">",
            0.10,
            0.08,
            10.0,
            "critical",
            "{device}: cells differ by {value:.3f} {unit} at rest (> {threshold:.2f} {unit}): "
            "a cell is failing",
            f"{_SPEC} notes: alarm at 0.10 V at rest [INFERRED]",
        ),
        ThresholdRule(
            "rc_cell_imbalance_load",
            "cell_voltage_spread",
            ">",
            0.20,
            0.15,
            2.0,
            "critical",
            "{device}: cells differ by {value:.3f} {unit} (> {threshold:.2f} {unit}): "
            "a cell is sagging",
            f"{_SPEC} notes: alarm at 0.20 V under load [INFERRED]",
        ),
        ThresholdRule(
            "rc_storage_low",
            "cell_voltage_rest",
            "<",
            3.75,
            3.80,
            4 * 3600.0,
            "info",
            "{device}: resting at {value:.2f} {unit}/cell, below storage (3.80-3.90 {unit})",
            f"{_SPEC}: storage 3.80-3.90 V/cell; ladder flags outside 3.75-3.95 V [INFERRED]",
        ),
        ThresholdRule(
            "rc_storage_high",
            "cell_voltage_rest",
            ">",
            3.95,
            3.90,
            4 * 3600.0,
            "info",
            "{device}: resting at {value:.2f} {unit}/cell for hours, above storage "
            "(3.80-3.90 {unit})",
            f"{_SPEC}: storage 3.80-3.90 V/cell; ladder flags outside 3.75-3.95 V [INFERRED]",
        ),
        ThresholdRule(
            "rc_pack_temperature_high",
            "pack_temperature",
            ">",
            50.0,
            45.0,
            5.0,
            "warning",
            "{device}: pack at {value:.0f} {unit} (> {threshold:.0f} {unit}): let it cool",
            f"{_SPEC} ladder (pack warn 50 °C) [INFERRED]",
        ),
        ThresholdRule(
            "rc_pack_temperature_critical",
            "pack_temperature",
            ">",
            60.0,
            55.0,
            5.0,
            "critical",
            "{device}: pack at {value:.0f} {unit} (> {threshold:.0f} {unit}), never-exceed "
            "is 65 °C: stop",
            f"{_SPEC}: 'NEVER allow the battery temperature to exceed 150 °F (65 °C)' "
            "(Tower Hobbies); critical 60 °C [INFERRED]",
        ),
        ThresholdRule(
            "rc_esc_temperature_high",
            "esc_temperature",
            ">",
            80.0,
            75.0,
            3.0,
            "warning",
            "{device}: ESC at {value:.0f} {unit} (> {threshold:.0f} {unit})",
            f"{_SPEC} ladder (ESC warn 80 °C) [INFERRED]",
        ),
        ThresholdRule(
            "rc_esc_temperature_critical",
            "esc_temperature",
            ">",
            95.0,
            90.0,
            3.0,
            "critical",
            "{device}: ESC at {value:.0f} {unit} (> {threshold:.0f} {unit}), near its "
            "100-110 °C cut-off",
            f"{_SPEC}: ESC protection 100-110 °C (FlySky HW-709, Kavan, Duratrax); "
            "critical 95 °C [INFERRED]",
        ),
        ThresholdRule(
            "rc_motor_temperature_high",
            "motor_temperature",
            ">",
            71.0,
            66.0,
            3.0,
            "warning",
            "{device}: motor at {value:.0f} {unit} (> {threshold:.0f} {unit} / 160 °F)",
            f"{_SPEC} ladder (motor warn 71 °C / 160 °F) [INFERRED]",
        ),
        ThresholdRule(
            "rc_motor_temperature_critical",
            "motor_temperature",
            ">",
            82.0,
            77.0,
            3.0,
            "critical",
            "{device}: motor at {value:.0f} {unit} (> {threshold:.0f} {unit} / 180 °F): stop",
            f"{_SPEC}: 'I won't let my motors get above 180°F' (rctalk.com)",
        ),
    )
