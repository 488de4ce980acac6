"""The alert engine: incremental evaluation per reading, the alert lifecycle, persistence.

Each reading is looked up by metric in an index (exact names in a dict, wildcard rules resolved
once per new metric name and cached), so the cost per reading is that of the few rules that
watch its metric, not of all rules. Per (rule, device) the engine keeps a small watch: when the
condition started (for `for:`), the last value, the rate window, when it was last seen.

Lifecycle: a condition that holds for `for:` fires an alert (one per (rule, device), so repeats
are deduplicated into its `count`); the value crossing back past the clear threshold resolves
it. Any alert may be acknowledged (kept, marked) or silenced until a time (kept and shown, but
transitions carry `notify = False`, so REST events and notifications are held back). State and
history are written to SQLite (`hub.alerts.store`) and reloaded at start, so a restart keeps
firing alerts firing. Time comes from `clock` (ms), so tests drive it with a fake one.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from hub.alerts.rules import Rule, RuleConfig
from hub.alerts.store import Alert, AlertStore
from hub.model import CATALOG, Reading

log = logging.getLogger(__name__)

TransitionKind = Literal["firing", "resolved", "acknowledged", "silenced", "unsilenced"]
ALL_DEVICES = "*"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Transition:
    """A change in an alert's life, handed to subscribers (HA discovery, REST, web feed)."""

    kind: TransitionKind
    alert: Alert  # a snapshot taken at the transition
    at_ms: int

    @property
    def notify(self) -> bool:
        """False while the alert is silenced: show it, but do not page anyone."""
        return not self.alert.silenced(self.at_ms)


@dataclass(slots=True)
class _Watch:
    """What one rule knows about one device."""

    since_ms: int | None = None  # condition true since (the `for:` clock); None = not pending
    value: float | None = None
    metric: str | None = None
    unit: str | None = None
    seen_ms: int | None = None
    # kind rate: per series (metric, tags), recent (timestamp_ms, value)
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], collections.deque[tuple[int, float]]] = (
        field(default_factory=dict)
    )


Subscriber = Callable[[Transition], None]


class AlertEngine:
    def __init__(
        self,
        rules: Sequence[RuleConfig],
        store: AlertStore | None = None,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.clock = clock
        self.store = store
        self._subscribers: list[Subscriber] = []
        self._watches: dict[tuple[str, str], _Watch] = {}
        # Keys whose condition holds, waiting for `for:`. A dict, not a set: those due in one
        # tick fire in the order they began (rule order for one reading), in every process;
        # a set's order follows the per-process string hash seed.
        self._pending: dict[tuple[str, str], None] = {}
        self._active: dict[tuple[str, str], Alert] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._silences: dict[tuple[str, str], int] = {}
        self._tests: dict[tuple[str, str], int] = {}  # test alerts firing -> resolve at (ms)
        self._next_id = 1
        self.readings_seen = 0
        self.evaluations = 0
        self.transitions = 0
        self.set_rules(rules)
        if store is not None:
            self._load(store)

    # -- rules and index ---------------------------------------------------------------------

    def set_rules(self, rules: Sequence[RuleConfig]) -> None:
        compiled = [Rule.compile(r) for r in rules if r.enabled]
        self.rules: dict[str, Rule] = {r.id: r for r in compiled}
        self._exact: dict[str, list[Rule]] = collections.defaultdict(list)
        self._patterned: list[Rule] = []
        self._offline: list[Rule] = []
        self._stale: list[Rule] = []
        for rule in compiled:
            if rule.kind == "offline":
                self._offline.append(rule)
                continue
            if rule.kind == "stale":
                self._stale.append(rule)
            for metric in rule.exact_metrics:
                self._exact[metric].append(rule)
            if rule.metric_patterns:
                self._patterned.append(rule)
        self._by_metric: dict[str, tuple[Rule, ...]] = {}
        self._by_series: dict[tuple[str, str], tuple[Rule, ...]] = {}
        for key in [k for k in self._watches if k[0] not in self.rules]:
            del self._watches[key]
            self._pending.pop(key, None)

    def _rules_for(self, metric: str) -> tuple[Rule, ...]:
        rules = self._by_metric.get(metric)
        if rules is None:
            found = list(self._exact.get(metric, ()))
            found.extend(r for r in self._patterned if r.matches_metric(metric) and r not in found)
            rules = self._by_metric[metric] = tuple(found)
        return rules

    # -- state from the store ----------------------------------------------------------------

    def _load(self, store: AlertStore) -> None:
        self._next_id = store.max_id() + 1
        self._silences = store.load_silences()
        now = self.clock()
        for alert in store.load_firing():
            if alert.rule not in self.rules:
                # The rule was removed or switched off while the hub was down.
                alert.state, alert.resolved_ms, alert.updated_ms = "resolved", now, now
                store.save(alert, "resolved", "rule removed")
                continue
            self._active[alert.key] = alert
            watch = self._watches.setdefault(alert.key, _Watch())
            watch.value, watch.metric, watch.unit = alert.value, alert.metric, alert.unit
            if self.rules[alert.rule].kind == "stale":
                watch.seen_ms = now - self.rules[alert.rule].stale_ms
        self.apply_commands()

    def prime(self, device: str, metric: str, last_seen_ms: int) -> None:
        """A series the store already holds (at start): its rules get a watch, so their HA
        entities survive a restart before the next reading, and stale rules count silence
        from the last stored reading."""
        for rule in self._rules_for(metric):
            if not rule.matches_device(device):
                continue
            watch = self._watches.setdefault((rule.id, device), _Watch())
            if watch.metric is None:
                watch.metric = metric
            if rule.kind == "stale" and (watch.seen_ms is None or last_seen_ms > watch.seen_ms):
                watch.seen_ms, watch.metric = last_seen_ms, metric

    def known_device(self, device: str) -> None:
        """A device the hub knows: offline rules get a (quiet) watch, so HA shows the entity."""
        for rule in self._offline:
            if rule.matches_device(device):
                self._watches.setdefault((rule.id, device), _Watch())

    # -- input -----------------------------------------------------------------------------

    def on_readings(self, readings: Iterable[Reading]) -> None:
        now = self.clock()
        for reading in readings:
            self.on_reading(reading, now)

    def _rules_for_series(self, metric: str, device: str) -> tuple[Rule, ...]:
        rules = tuple(r for r in self._rules_for(metric) if r.matches_device(device))
        if len(self._by_series) < 100_000:
            self._by_series[(metric, device)] = rules
        return rules

    def on_reading(self, reading: Reading, now: int | None = None) -> None:
        self.readings_seen += 1
        device = reading.device
        rules = self._by_series.get((reading.metric, device))
        if rules is None:
            rules = self._rules_for_series(reading.metric, device)
        if not rules:
            return
        if now is None:
            now = self.clock()
        for rule in rules:
            if rule.tags and not rule.matches_tags(reading.tags):
                continue
            self.evaluations += 1
            key = (rule.id, device)
            watch = self._watches.get(key)
            if watch is None:
                watch = self._watches[key] = _Watch()
            watch.metric, watch.unit, watch.seen_ms = reading.metric, reading.unit, now
            kind = rule.kind
            if kind == "threshold":
                self._level(rule, key, watch, reading.value, now)
            elif kind == "rate":
                rate = self._rate(rule, watch, reading)
                if rate is not None:
                    self._level(rule, key, watch, rate, now)
            else:  # stale: a reading is the cure
                watch.value = reading.value
                alert = self._active.get(key)
                if alert is not None:
                    self._resolve(alert, reading.value, now)

    def on_availability(self, device: str, online: bool, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        for rule in self._offline:
            if not rule.matches_device(device):
                continue
            key = (rule.id, device)
            watch = self._watches.setdefault(key, _Watch())
            watch.value, watch.seen_ms = (1.0 if online else 0.0), now
            alert = self._active.get(key)
            if online:
                watch.since_ms = None
                self._pending.pop(key, None)
                if alert is not None:
                    self._resolve(alert, 1.0, now)
            elif alert is None:
                if watch.since_ms is None:
                    watch.since_ms = now
                if now - watch.since_ms >= rule.for_ms:
                    self._fire(rule, key, watch, 0.0, now)
                else:
                    self._pending[key] = None

    def _rate(self, rule: Rule, watch: _Watch, reading: Reading) -> float | None:
        series = (reading.metric, tuple(sorted(reading.tags.items())) if reading.tags else ())
        samples = watch.samples.get(series)
        if samples is None:
            samples = watch.samples[series] = collections.deque()
        ts = reading.timestamp_ms
        if samples and ts <= samples[-1][0]:
            return None  # out of order or repeated: no rate from it
        samples.append((ts, reading.value))
        while len(samples) > 2 and ts - samples[1][0] >= rule.window_ms:
            samples.popleft()
        if len(samples) < 2:
            return None
        first_ts, first_value = samples[0]
        return (reading.value - first_value) * 1000.0 / (ts - first_ts)

    def _level(
        self, rule: Rule, key: tuple[str, str], watch: _Watch, value: float, now: int
    ) -> None:
        watch.value = value
        alert = self._active.get(key)
        if alert is not None:
            if key in self._tests:
                return  # a test alert ends on its own timer, not on the next real reading
            if rule.cleared(value):
                self._resolve(alert, value, now)
            else:
                alert.value, alert.updated_ms = value, now
                alert.count += 1
                self._dirty.add(key)
            return
        if rule._op(value, rule.threshold):
            if watch.since_ms is None:
                watch.since_ms = now
            if now - watch.since_ms >= rule.for_ms:
                self._fire(rule, key, watch, value, now)
            else:
                self._pending[key] = None
        elif watch.since_ms is not None:
            watch.since_ms = None
            self._pending.pop(key, None)

    def tick(self, now: int | None = None) -> None:
        """Fire what has held for `for:`, fire stale series, end silences, persist values."""
        now = self.clock() if now is None else now
        for key in list(self._pending):
            rule = self.rules.get(key[0])
            watch = self._watches.get(key)
            if rule is None or watch is None or watch.since_ms is None or key in self._active:
                self._pending.pop(key, None)
                continue
            if now - watch.since_ms >= rule.for_ms:
                self._fire(rule, key, watch, watch.value, now)
        for rule in self._stale:
            for (rule_id, device), watch in self._watches.items():
                if rule_id != rule.id or watch.seen_ms is None:
                    continue
                if now - watch.seen_ms >= rule.stale_ms and (rule_id, device) not in self._active:
                    age = (now - watch.seen_ms) / 1000.0
                    self._fire(rule, (rule_id, device), watch, age, now)
        for key, until in list(self._tests.items()):
            test_alert = self._active.get(key)
            if test_alert is None:
                del self._tests[key]
            elif until <= now:
                del self._tests[key]
                self._resolve(test_alert, test_alert.value, now)
        for silence_key, until in list(self._silences.items()):
            if until <= now:
                del self._silences[silence_key]
                if self.store is not None:
                    self.store.save_silence(*silence_key, None, None)
        for alert in self._active.values():
            if alert.silenced_until_ms is not None and alert.silenced_until_ms <= now:
                alert.silenced_until_ms = None
                alert.updated_ms = now
                self._record(alert, "unsilenced", now)
        if self._dirty and self.store is not None:
            for key in self._dirty:
                changed = self._active.get(key)
                if changed is not None:
                    self.store.save(changed)
        self._dirty.clear()
        if self.store is not None:
            self.apply_commands()

    # -- lifecycle -------------------------------------------------------------------------

    def _silence_until(self, rule: str, device: str, now: int) -> int | None:
        until = max(
            self._silences.get((rule, device), 0), self._silences.get((rule, ALL_DEVICES), 0)
        )
        return until if until > now else None

    def _fire(
        self,
        rule: Rule,
        key: tuple[str, str],
        watch: _Watch,
        value: float | None,
        now: int,
        prefix: str = "",
    ) -> None:
        watch.since_ms = None
        self._pending.pop(key, None)
        device = key[1]
        alert = Alert(
            id=self._next_id,
            rule=rule.id,
            device=device,
            metric=watch.metric,
            severity=rule.severity,
            state="firing",
            value=value,
            threshold=rule.threshold if rule.kind in ("threshold", "rate") else None,
            unit=watch.unit if rule.kind == "threshold" else None,
            message=prefix + rule.render(device, watch.metric, value, watch.unit),
            device_class=rule.device_class,
            started_ms=now,
            updated_ms=now,
            silenced_until_ms=self._silence_until(rule.id, device, now),
        )
        self._next_id += 1
        self._active[key] = alert
        log.info("Alert %s fired: %s", rule.id, alert.message)
        self._record(alert, "firing", now)

    def _resolve(self, alert: Alert, value: float | None, now: int) -> None:
        del self._active[alert.key]
        self._dirty.discard(alert.key)
        alert.state, alert.value, alert.resolved_ms, alert.updated_ms = "resolved", value, now, now
        log.info("Alert %s on %s resolved", alert.rule, alert.device)
        self._record(alert, "resolved", now)

    def _record(
        self, alert: Alert, kind: TransitionKind, now: int, detail: str | None = None
    ) -> None:
        self.transitions += 1
        if self.store is not None:
            self.store.save(alert, kind, detail)
        transition = Transition(kind, alert.copy(), now)
        for subscriber in self._subscribers:
            try:
                subscriber(transition)
            except Exception:
                log.exception("Alert subscriber %r failed", subscriber)

    # -- public surface (web API, CLI, HA) ----------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(Transition)` on every transition; returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def active(self) -> list[Alert]:
        """Firing alerts, most severe first, then oldest first."""
        order = {"critical": 0, "warning": 1, "info": 2}
        return sorted(
            (a.copy() for a in self._active.values()),
            key=lambda a: (order.get(a.severity, 3), a.started_ms, a.id),
        )

    def history(self, limit: int = 100, device: str | None = None) -> list[Alert]:
        """Alerts newest first (firing and resolved), from the store."""
        if self.store is None:
            alerts = [a for a in self.active() if device is None or a.device == device]
            return alerts[:limit]
        live = {a.id: a for a in self._active.values()}
        # Values of firing alerts change in memory between writes; show the live ones.
        return [live.get(a.id, a).copy() for a in self.store.history(limit, device)]

    def get(self, alert_id: int) -> Alert | None:
        for alert in self._active.values():
            if alert.id == alert_id:
                return alert
        return self.store.get(alert_id) if self.store is not None else None

    def acknowledge(self, alert_id: int, by: str) -> Alert:
        """Mark an alert as seen by `by`. Raises KeyError for an unknown id."""
        alert = self.get(alert_id)
        if alert is None:
            raise KeyError(f"no alert with id {alert_id}")
        now = self.clock()
        alert.acknowledged_by, alert.acknowledged_ms, alert.updated_ms = by, now, now
        self._record(alert, "acknowledged", now, by)
        return alert.copy()

    def silence(self, target: int | str, until_ms: int, by: str | None = None) -> list[Alert]:
        """Hold back notifications until `until_ms` for one alert (its rule and device, so a
        re-fire stays quiet too) or a whole rule (by id, every device). `until_ms` in the past
        lifts the silence. Returns the firing alerts it touched. KeyError for an unknown target.
        """
        now = self.clock()
        if isinstance(target, int):
            alert = self.get(target)
            if alert is None:
                raise KeyError(f"no alert with id {target}")
            key = (alert.rule, alert.device)
        else:
            if target not in self.rules:
                raise KeyError(f"no rule with id {target!r}")
            key = (target, ALL_DEVICES)
        until: int | None = until_ms if until_ms > now else None
        if until is None:
            self._silences.pop(key, None)
        else:
            self._silences[key] = until
        if self.store is not None:
            self.store.save_silence(*key, until, by)
        touched = []
        for alert in self._active.values():
            if alert.rule == key[0] and key[1] in (ALL_DEVICES, alert.device):
                alert.silenced_until_ms = self._silence_until(alert.rule, alert.device, now)
                alert.updated_ms = now
                kind: TransitionKind = "silenced" if alert.silenced_until_ms else "unsilenced"
                self._record(alert, kind, now, by)
                touched.append(alert.copy())
        return touched

    def fire_test(self, rule_id: str, device: str, until_ms: int) -> Alert:
        """`hub alerts test RULE DEVICE`: fire a real alert of `rule_id` on `device` (message
        starting "TEST:"), through every subscriber (Home Assistant entity, events, notify),
        and resolve it at `until_ms`. KeyError for an unknown rule, ValueError if it fires."""
        rule = self.rules.get(rule_id)
        if rule is None:
            raise KeyError(f"no rule with id {rule_id!r}")
        key = (rule_id, device)
        if key in self._active:
            raise ValueError(f"{rule_id} is already firing on {device}")
        now = self.clock()
        watch = self._watches.setdefault(key, _Watch())
        if watch.metric is None and rule.exact_metrics:
            watch.metric = rule.exact_metrics[0]
            spec = CATALOG.get(watch.metric)
            watch.unit = spec.unit if spec else None
        value = rule.threshold if rule.kind in ("threshold", "rate") else watch.value
        self._tests[key] = until_ms
        self._fire(rule, key, watch, value, now, prefix="TEST: ")
        return self._active[key].copy()

    def apply_commands(self) -> None:
        """Apply ack/silence requests that `hub alerts` wrote to the store."""
        assert self.store is not None
        for command_id, command, target, by, until_ms in self.store.pending_commands():
            now = self.clock()
            try:
                if command == "ack":
                    self.acknowledge(int(target), by or "cli")
                    result = "ok"
                elif command == "silence":
                    alert_or_rule: int | str = int(target) if target.isdigit() else target
                    touched = self.silence(alert_or_rule, int(until_ms or 0), by)
                    result = f"ok ({len(touched)} firing)"
                elif command == "test":
                    rule_id, _, device = target.partition("\t")
                    fired = self.fire_test(rule_id, device, int(until_ms or now))
                    result = f"ok (test alert {fired.id} firing)"
                else:
                    result = f"unknown command {command!r}"
            except (KeyError, ValueError) as exc:
                result = f"error: {exc.args[0] if exc.args else exc}"
            self.store.mark_command(command_id, now, result)

    def targets(self) -> set[tuple[str, str]]:
        """(rule, device) pairs the engine watches: one HA binary_sensor each."""
        return set(self._watches) | set(self._active)

    def state(self, rule: str, device: str) -> Alert | None:
        alert = self._active.get((rule, device))
        return alert.copy() if alert else None

    def dry_run(self, rule_id: str, value: float, device: str = "test") -> dict[str, object]:
        """What `value` would do to `rule_id` (no state changes): `hub alerts test`."""
        rule = self.rules.get(rule_id)
        if rule is None:
            raise KeyError(f"no rule with id {rule_id!r}")
        metric = rule.exact_metrics[0] if rule.exact_metrics else None
        spec = CATALOG.get(metric) if metric else None
        breached = rule.breached(value) if rule.kind in ("threshold", "rate") else None
        return {
            "rule": rule.id,
            "kind": rule.kind,
            "value": value,
            "comparison": rule.comparison,
            "threshold": rule.threshold,
            "clear": rule.clear,
            "for_s": rule.for_ms / 1000,
            "would_fire": bool(breached),
            "would_clear": rule.cleared(value) if rule.kind in ("threshold", "rate") else None,
            "severity": rule.severity,
            "message": rule.render(device, metric, value, spec.unit if spec else None),
        }

    def status(self) -> dict[str, object]:
        return {
            "rules": len(self.rules),
            "firing": len(self._active),
            "pending": len(self._pending),
            "watches": len(self._watches),
            "readings_seen": self.readings_seen,
            "evaluations": self.evaluations,
            "transitions": self.transitions,
            "store_write_errors": self.store.write_errors if self.store else 0,
        }
