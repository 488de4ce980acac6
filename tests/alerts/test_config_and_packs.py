"""Rule schema: malformed rules are reported with their path (and line) by `hub config check`;
packs and overrides; the CLI dry run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.alerts.packs import air_pack, effective_rules, rc_pack
from hub.alerts.rules import AlertsConfig
from hub.cli.alerts import alerts
from hub.derive.rc_thresholds import rc_threshold_rules
from hub.ha.settings import RestSettings

BAD = """\
alerts:
  rules:
    - id: fan_co2
      metric: co2
      threshold: 1400
    - id: bad_clear
      metric: co2
      comparison: ">"
      threshold: 1000
      clear: 1200
    - id: bad_template
      metric: co2
      threshold: 1000
      message: "{device} at {valeu}"
    - id: Bad-Id
      metric: co2
      threshold: 1
    - id: no_threshold
      metric: co2
    - id: typo
      metric: co2
      threshold: 1
      fore: 10s
"""


def test_config_check_reports_each_bad_rule_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(BAD)
    done = subprocess.run(
        [sys.executable, "-m", "hub", "config", "check", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr
    assert "alerts -> rules -> 1: clear (1200.0) must not be above threshold" in err
    assert "alerts -> rules -> 2 -> message" in err and "{valeu}" in err
    assert "alerts -> rules -> 3 -> id" in err
    assert "alerts -> rules -> 4: a threshold rule needs a threshold" in err
    assert "[fore] is an invalid option for [alerts -> rules -> 5]; did you mean [for]?" in err
    assert "hub.yaml:15: alerts -> rules -> 3 -> id" in err  # the line of the bad id


def test_override_of_unknown_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown built-in rule 'rc_cell_voltage_lo'"):
        AlertsConfig.model_validate({"overrides": {"rc_cell_voltage_lo": {"threshold": 3.4}}})


def test_rc_pack_is_the_derive_ladder() -> None:
    rules = {r.id: r for r in rc_pack()}
    for t in rc_threshold_rules():
        rule = rules[t.id]
        assert (rule.metric, rule.comparison, rule.threshold, rule.clear, rule.for_s) == (
            [t.metric],
            t.comparison,
            t.threshold,
            t.clear_threshold,
            t.for_s,
        )
    assert rules["rc_esc_temperature_rising"].kind == "rate"
    lihv = {r.id: r for r in rc_pack("lihv")}
    assert lihv["rc_cell_over_charge"].threshold == 4.37


def test_air_pack_follows_the_spec_ladder() -> None:
    rules = {r.id: r for r in air_pack()}
    assert rules["air_co2_high"].threshold == 1400  # EN 13779 IDA4
    assert rules["air_co2_critical"].threshold == 2000  # UBA unacceptable
    assert rules["air_humidity_high"].threshold == 60


def test_overrides_disable_and_replace() -> None:
    config = AlertsConfig.model_validate({
        "packs": {"air": False},
        "overrides": {
            "rc_cell_voltage_low": {"threshold": 3.6, "clear": 3.7, "for": "5s"},
            "rc_storage_low": {"enabled": False},
            "air_co2_high": {"threshold": 1200},  # its pack is off: accepted, no effect
        },
        "rules": [{"id": "rc_esc_temperature_high", "metric": "esc_temperature", "threshold": 70, "clear": 65}],
    })  # fmt: skip
    rules = {r.id: r for r in effective_rules(config)}
    assert not any(r.startswith("air_") for r in rules)
    assert "rc_storage_low" not in rules
    low = rules["rc_cell_voltage_low"]
    assert (low.threshold, low.clear, low.for_s, low.severity) == (3.6, 3.7, 5.0, "warning")
    assert rules["rc_esc_temperature_high"].threshold == 70
    assert rules["rc_esc_temperature_high"].source == "hub.yaml"


def test_dry_run_cli() -> None:
    runner = CliRunner()
    fired = runner.invoke(alerts, ["test", "rc_cell_voltage_critical", "--value", "3.2", "--device", "buggy"])  # fmt: skip
    assert fired.exit_code == 0
    assert "FIRES" in fired.output and "buggy: 3.20 V/cell under 3.30 V" in fired.output
    held = runner.invoke(alerts, ["test", "rc_cell_voltage_critical", "--value", "3.35"])
    assert "holds" in held.output
    unknown = runner.invoke(alerts, ["test", "nope", "--value", "1"])
    assert unknown.exit_code == 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"enabled": True, "url": "http://ha:8123", "token": "t"}, "must end in /api"),
        ({"enabled": True, "url": "ftp://ha/api", "token": "t"}, "not an http"),
        ({"enabled": True, "url": "http://ha:8123/api"}, "has no token"),
        ({"enabled": True, "token": "t"}, "has no url"),
        ({"notify_service": "notify"}, "domain.service"),
    ],
)
def test_rest_settings_are_validated(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RestSettings.model_validate(settings)
