"""The RC alert ladder of specs/esc-telemetry.md §6 as a typed table."""

from __future__ import annotations

import pytest

from hub.derive.rc_readings import unit_of
from hub.derive.rc_thresholds import ThresholdRule, rc_threshold_rules
from hub.model import CATALOG


def by_id(chemistry: str = "lipo") -> dict[str, ThresholdRule]:
    return {r.id: r for r in rc_threshold_rules(chemistry)}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rule_id", "metric", "comparison", "threshold", "severity"),
    [
        ("rc_cell_voltage_low", "cell_voltage_avg", "<", 3.50, "warning"),
        ("rc_cell_voltage_critical", "cell_voltage_avg", "<", 3.30, "critical"),
        ("rc_cell_min_critical", "cell_voltage_min", "<", 3.20, "critical"),
        ("rc_cell_over_charge", "cell_voltage_max", ">", 4.22, "critical"),
        ("rc_cell_imbalance_rest", "cell_voltage_spread_rest", ">", 0.05, "warning"),
        ("rc_cell_imbalance_rest_alarm", "cell_voltage_spread_rest", ">", 0.10, "critical"),
        ("rc_cell_imbalance_load", "cell_voltage_spread", ">", 0.20, "critical"),
        ("rc_storage_low", "cell_voltage_rest", "<", 3.75, "info"),
        ("rc_storage_high", "cell_voltage_rest", ">", 3.95, "info"),
        ("rc_pack_temperature_high", "pack_temperature", ">", 50.0, "warning"),
        ("rc_pack_temperature_critical", "pack_temperature", ">", 60.0, "critical"),
        ("rc_esc_temperature_high", "esc_temperature", ">", 80.0, "warning"),
        ("rc_esc_temperature_critical", "esc_temperature", ">", 95.0, "critical"),
        ("rc_motor_temperature_high", "motor_temperature", ">", 71.0, "warning"),
        ("rc_motor_temperature_critical", "motor_temperature", ">", 82.0, "critical"),
    ],
)
def test_ladder_values(
    rule_id: str, metric: str, comparison: str, threshold: float, severity: str
) -> None:
    rule = by_id()[rule_id]
    assert (rule.metric, rule.comparison, rule.threshold, rule.severity) == (
        metric,
        comparison,
        threshold,
        severity,
    )


def test_lihv_over_charge_is_4_37() -> None:
    assert by_id("lihv")["rc_cell_over_charge"].threshold == 4.37
    assert by_id("lihv")["rc_cell_over_charge"].clear_threshold == 4.35
    assert by_id("lipo")["rc_pack_over_charge"].threshold == 4.22


@pytest.mark.parametrize("chemistry", ["lipo", "lihv"])
def test_every_rule_is_well_formed(chemistry: str) -> None:
    rules = rc_threshold_rules(chemistry)  # type: ignore[arg-type]
    assert len({r.id for r in rules}) == len(rules)
    for r in rules:
        assert r.metric in CATALOG, r.metric
        # Hysteresis: the clear threshold is on the safe side of the threshold.
        if r.comparison in ("<", "<="):
            assert r.clear_threshold > r.threshold, r.id
        else:
            assert r.clear_threshold < r.threshold, r.id
        assert r.for_s >= 0
        assert "specs/esc-telemetry.md" in r.source
        text = r.message.format(
            device="buggy", value=r.threshold, threshold=r.threshold, unit=unit_of(r.metric)
        )
        assert text.startswith("buggy: ")


def test_breach_and_clear_with_hysteresis() -> None:
    low = by_id()["rc_cell_voltage_low"]
    assert low.breached(3.49) and not low.breached(3.50)
    assert not low.cleared(3.55)  # still inside the hysteresis band
    assert low.cleared(3.61) and not low.cleared(3.60)
    hot = by_id()["rc_esc_temperature_critical"]
    assert hot.breached(95.5) and not hot.breached(95.0)
    assert not hot.cleared(92.0) and hot.cleared(89.9)
