"""Alert rules: the `alerts:` section of hub.yaml and the compiled form the engine evaluates.

A rule watches readings whose metric and device match its selectors (shell wildcards,
`fnmatch`: `cell_voltage_*`, `airq-*`) and whose tags match `tags` (values may be wildcards
too). Kinds:

- `threshold`: fires when `value <comparison> threshold` has held for `for`, resolves once the
  value is back past `clear` (hysteresis: `clear` defaults to `threshold`).
- `rate`: the same comparison on the rate of change in units per second, measured between the
  oldest reading inside `window` and the newest (e.g. esc_temperature rising > 2 °C/s).
- `stale`: fires when a matched metric of a device has not been seen for `stale_after`.
- `offline`: fires when a matched device's availability goes offline (for `for`).

One alert exists per (rule, device): the series of one device that a rule matches count as one
stream. Messages are `str.format` templates with `{device}`, `{metric}`, `{value}`,
`{threshold}`, `{clear}`, `{unit}`, `{rule}`, `{severity}`; they are checked when the config
is loaded, so `hub config check` points at a broken one.
"""

from __future__ import annotations

import fnmatch
import operator
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from hub.config.base import ConfigModel, Duration

Kind = Literal["threshold", "rate", "stale", "offline"]
Comparison = Literal["<", "<=", ">", ">="]
Severity = Literal["info", "warning", "critical"]
DeviceClass = Literal[
    "problem", "safety", "heat", "cold", "battery", "gas", "moisture", "smoke", "connectivity"
]

RULE_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")

# Values a message template may use; a template naming anything else is a config error.
TEMPLATE_FIELDS = {
    "device": "buggy",
    "metric": "cell_voltage_avg",
    "value": 3.21,
    "threshold": 3.3,
    "clear": 3.4,
    "unit": "V",
    "rule": "rule_id",
    "severity": "warning",
}


def check_template(template: str) -> str:
    """Raise ValueError naming the problem when `template` cannot be formatted."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise ValueError(f"message template {template!r} is malformed: {exc}") from None
    for name in names:
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if root not in TEMPLATE_FIELDS:
            raise ValueError(
                f"message template uses {{{name}}}; known fields: "
                + ", ".join(sorted(TEMPLATE_FIELDS))
            )
    try:
        template.format(**TEMPLATE_FIELDS)
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(f"message template {template!r} cannot be formatted: {exc}") from None
    return template


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class RuleConfig(ConfigModel):
    """One alert rule."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    id: str = Field(
        description="Unique rule id (lower-case letters, digits, '_'); names the HA entity."
    )
    name: str | None = Field(
        None,
        max_length=64,
        description='Short name of the alert\'s Home Assistant entity, shown after the device name ("CO2 high"); default from the id.',
    )
    kind: Kind = Field("threshold", description="threshold | rate | stale | offline.")
    metric: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Metric name(s) to watch; shell wildcards allowed (cell_voltage_*).",
    )
    device: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Device name(s) to watch; shell wildcards allowed (airq-*).",
    )
    tags: dict[str, str] = Field(
        default_factory=dict,
        description="Only readings whose tags match these (values may use wildcards).",
    )
    comparison: Comparison = Field(">", description="How value (or rate) meets the threshold.")
    threshold: float | None = Field(
        None, description="Firing threshold (units of the metric; per second for kind rate)."
    )
    clear: float | None = Field(
        None,
        description="Resolve once the value is back past this (hysteresis); default threshold.",
    )
    for_s: Duration = Field(
        0.0,
        alias="for",
        description="The condition must hold this long before the alert fires.",
    )
    window: Duration = Field(
        5.0, description="kind rate: the span the rate of change is measured over."
    )
    stale_after: Duration = Field(
        0.0, description="kind stale: fire when no reading arrived for this long."
    )
    severity: Severity = Field("warning", description="info | warning | critical.")
    message: str = Field(
        "{device}: {rule} ({metric} {value})",
        description="str.format template: {device} {metric} {value} {threshold} {clear} {unit} {rule} {severity}.",
    )
    device_class: DeviceClass | None = Field(
        None,
        description="Home Assistant device class of the alert's binary_sensor (default by metric).",
    )
    enabled: bool = Field(True, description="False keeps the rule defined but switched off.")
    source: str = Field("hub.yaml", description="Where the rule and its numbers come from.")

    @field_validator("metric", "device", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not RULE_ID_RE.match(value):
            raise ValueError(
                f"rule id {value!r} must be lower-case letters, digits and '_', starting with a letter"
            )
        return value

    @field_validator("message")
    @classmethod
    def _check_message(cls, value: str) -> str:
        return check_template(value)

    @field_validator("metric", "device")
    @classmethod
    def _check_patterns(cls, value: list[str]) -> list[str]:
        if not value or any(not p for p in value):
            raise ValueError("needs at least one non-empty name or pattern")
        return value

    @model_validator(mode="after")
    def _check_kind(self) -> RuleConfig:
        if self.kind in ("threshold", "rate") and self.threshold is None:
            raise ValueError(f"a {self.kind} rule needs a threshold")
        if self.kind == "stale" and self.stale_after <= 0:
            raise ValueError("a stale rule needs stale_after (e.g. '5m')")
        if self.kind in ("threshold", "rate") and self.clear is not None:
            assert self.threshold is not None
            if self.comparison in (">", ">=") and self.clear > self.threshold:
                raise ValueError(
                    f"clear ({self.clear}) must not be above threshold ({self.threshold}) "
                    f"for comparison {self.comparison!r}"
                )
            if self.comparison in ("<", "<=") and self.clear < self.threshold:
                raise ValueError(
                    f"clear ({self.clear}) must not be below threshold ({self.threshold}) "
                    f"for comparison {self.comparison!r}"
                )
        if self.kind == "rate" and self.window <= 0:
            raise ValueError("a rate rule needs a window > 0")
        return self


class RuleOverride(ConfigModel):
    """Changes to one built-in rule, by id; unset fields keep the pack's value."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    enabled: bool | None = Field(None, description="False switches the built-in rule off.")
    device: list[str] | None = Field(None, description="Device name(s) or patterns.")
    threshold: float | None = Field(None, description="Firing threshold.")
    clear: float | None = Field(None, description="Clear threshold (hysteresis).")
    for_s: Duration | None = Field(None, alias="for", description="Hold time before firing.")
    severity: Severity | None = Field(None, description="info | warning | critical.")
    message: str | None = Field(None, description="Message template.")
    name: str | None = Field(None, max_length=64, description="Short Home Assistant name.")
    device_class: DeviceClass | None = Field(
        None, description="Home Assistant device class of the alert's binary_sensor."
    )

    @field_validator("device", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("message")
    @classmethod
    def _check_message(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)


class PacksConfig(ConfigModel):
    """Built-in rule packs (on by default)."""

    air: bool = Field(True, description="Indoor air: CO2 (EN 13779 / UBA), PM2.5 AQI, VOC index.")
    rc: bool = Field(True, description="RC LiPo and thermal ladder (esc-telemetry.md §6).")
    rc_chemistry: Literal["lipo", "lihv"] = Field(
        "lipo", description="Pack chemistry for the over-charge limits: lipo | lihv."
    )


class AlertsConfig(ConfigModel):
    """The `alerts:` section."""

    enabled: bool = Field(True, description="Evaluate alert rules in `hub run`.")
    packs: PacksConfig = Field(default_factory=PacksConfig, description="Built-in rule packs.")
    overrides: dict[str, RuleOverride] = Field(
        default_factory=dict,
        description="Per built-in rule id: enabled, device, threshold, clear, for, severity, message.",
    )
    rules: list[RuleConfig] = Field(
        default_factory=list,
        description="Your own rules; one with a built-in rule's id replaces it.",
    )
    tick: Duration = Field(
        1.0, description="How often for-durations, staleness and silences are re-checked."
    )
    history_retention: Duration = Field(
        90 * 86400.0, description="Resolved alerts older than this are deleted."
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> AlertsConfig:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is defined twice")
            seen.add(rule.id)
        from hub.alerts.packs import effective_rules  # the packs are built from this module

        effective_rules(self)  # an override of an unknown rule, or one that breaks a rule
        return self


# -- the compiled form -------------------------------------------------------------------------


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_INCLUSIVE = {"<": "<=", "<=": "<=", ">": ">=", ">=": ">="}


def default_device_class(kind: str, metrics: list[str], comparison: str = ">") -> DeviceClass:
    """Home Assistant's words for "on" must read right: `problem` ("Problem"/"OK") unless a
    class says exactly what the alert means. `heat` reads "Hot" (over-temperature), `cold`
    "Cold", `battery` "Low" (a pack or cell under a voltage). `safety` ("Unsafe"), `gas`
    ("Detected": a leak) and `moisture` ("Wet") would misread a CO2 or humidity level."""
    if kind == "offline":
        return "problem"  # not connectivity: for that class "on" means connected
    joined = " ".join(metrics)
    rising = comparison in (">", ">=")
    if kind != "stale" and "temperature" in joined:
        return "heat" if rising else "cold"
    if (
        kind == "threshold"
        and not rising
        and ("cell_voltage" in joined or "pack_voltage" in joined)
    ):
        return "battery"
    return "problem"


def _is_pattern(text: str) -> bool:
    return any(c in text for c in "*?[")


@dataclass(slots=True, eq=False)
class Rule:
    """A rule ready to evaluate: selectors pre-split, matches cached per name."""

    config: RuleConfig
    id: str
    kind: str
    comparison: str
    threshold: float
    clear: float
    for_ms: int
    window_ms: int
    stale_ms: int
    severity: str
    device_class: str
    exact_metrics: tuple[str, ...]
    metric_patterns: tuple[str, ...]
    device_patterns: tuple[str, ...]
    tags: tuple[tuple[str, str], ...]
    _device_cache: dict[str, bool] = field(default_factory=dict)
    _op: Callable[[float, float], bool] = operator.gt
    _clear_op: Callable[[float, float], bool] = operator.ge

    def __post_init__(self) -> None:
        self._op = _OPS[self.comparison]
        self._clear_op = _OPS[_INCLUSIVE[self.comparison]]

    @classmethod
    def compile(cls, config: RuleConfig) -> Rule:
        threshold = config.threshold if config.threshold is not None else 0.0
        return cls(
            config=config,
            id=config.id,
            kind=config.kind,
            comparison=config.comparison,
            threshold=threshold,
            clear=config.clear if config.clear is not None else threshold,
            for_ms=round(config.for_s * 1000),
            window_ms=round(config.window * 1000),
            stale_ms=round(config.stale_after * 1000),
            severity=config.severity,
            device_class=config.device_class
            or default_device_class(config.kind, config.metric, config.comparison),
            exact_metrics=tuple(m for m in config.metric if not _is_pattern(m)),
            metric_patterns=tuple(m for m in config.metric if _is_pattern(m)),
            device_patterns=tuple(config.device),
            tags=tuple(sorted(config.tags.items())),
        )

    def matches_metric(self, metric: str) -> bool:
        return metric in self.exact_metrics or any(
            fnmatch.fnmatchcase(metric, p) for p in self.metric_patterns
        )

    def matches_device(self, device: str) -> bool:
        hit = self._device_cache.get(device)
        if hit is None:
            hit = any(fnmatch.fnmatchcase(device, p) for p in self.device_patterns)
            if len(self._device_cache) < 10_000:
                self._device_cache[device] = hit
        return hit

    def matches_tags(self, tags: Mapping[str, str]) -> bool:
        for key, pattern in self.tags:
            value = tags.get(key)
            if value is None or not fnmatch.fnmatchcase(value, pattern):
                return False
        return True

    def breached(self, value: float) -> bool:
        return self._op(value, self.threshold)

    def cleared(self, value: float) -> bool:
        """Back on the safe side of the clear threshold."""
        return not self._clear_op(value, self.clear)

    def render(self, device: str, metric: str | None, value: float | None, unit: str | None) -> str:
        fields = {
            "device": device,
            "metric": metric or "",
            "value": value if value is not None else float("nan"),
            "threshold": self.threshold,
            "clear": self.clear,
            "unit": unit or "",
            "rule": self.id,
            "severity": self.severity,
        }
        try:
            return self.config.message.format(**fields)
        except (ValueError, IndexError, KeyError, AttributeError, TypeError):
            # Checked at load with sample values; a surprise here must not lose the alert.
            return f"{device}: {self.id} ({metric} {value})"
