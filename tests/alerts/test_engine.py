"""Rule semantics with a fake clock: hysteresis, for:, rate, staleness, availability, dedup,
acknowledge/silence and restart persistence."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.alerts.engine import AlertEngine, Transition
from hub.alerts.rules import RuleConfig
from hub.alerts.store import AlertStore
from hub.model import Reading

T0 = 1_750_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> int:
        self.now += round(seconds * 1000)
        return self.now


def rule(**kwargs: Any) -> RuleConfig:
    return RuleConfig.model_validate({"id": "r", **kwargs})


def reading(value: float, clock: Clock, metric: str = "cell_voltage_avg", device: str = "buggy",
            tags: dict[str, str] | None = None) -> Reading:  # fmt: skip
    return Reading(device, metric, value, clock.now, "V", tags or {})


def make(rules: list[RuleConfig], store: AlertStore | None = None) -> tuple[AlertEngine, Clock, list[Transition]]:  # fmt: skip
    clock = Clock()
    engine = AlertEngine(rules, store, clock)
    seen: list[Transition] = []
    engine.subscribe(seen.append)
    return engine, clock, seen


LOW = dict(metric="cell_voltage_avg", comparison="<", threshold=3.3, clear=3.4)


def test_threshold_fires_and_clears_with_hysteresis() -> None:
    engine, clock, seen = make([rule(**LOW)])
    engine.on_readings([reading(3.5, clock)])
    assert engine.active() == []
    clock.advance(1)
    engine.on_readings([reading(3.29, clock)])
    [alert] = engine.active()
    assert (alert.rule, alert.device, alert.value, alert.state) == ("r", "buggy", 3.29, "firing")
    # Between threshold and clear: still firing (no flapping at 3.30-3.40).
    for value in (3.31, 3.35, 3.39, 3.4):
        clock.advance(1)
        engine.on_readings([reading(value, clock)])
        assert len(engine.active()) == 1, value
    clock.advance(1)
    engine.on_readings([reading(3.41, clock)])
    assert engine.active() == []
    assert [t.kind for t in seen] == ["firing", "resolved"]
    assert seen[1].alert.resolved_ms == clock.now


def test_for_duration_needs_the_condition_to_hold() -> None:
    engine, clock, _seen = make([rule(**LOW, **{"for": "2s"})])
    engine.on_readings([reading(3.2, clock)])
    clock.advance(1.5)
    engine.tick()
    assert engine.active() == []
    engine.on_readings([reading(3.35, clock)])  # not breached: the for: clock restarts
    clock.advance(1)
    engine.on_readings([reading(3.2, clock)])
    clock.advance(1.9)
    engine.tick()
    assert engine.active() == []
    clock.advance(0.1)
    engine.tick()  # fires from the tick, without a new reading
    assert [a.rule for a in engine.active()] == ["r"]
    assert engine.active()[0].started_ms == clock.now


def test_rate_of_change() -> None:
    engine, clock, _seen = make(
        [rule(kind="rate", metric="esc_temperature", threshold=2.0, clear=1.0, window="5s")]
    )
    temps = [40, 40.5, 41, 41.5, 42]  # 0.5 °C/s
    for t in temps:
        engine.on_readings([reading(t, clock, "esc_temperature")])
        clock.advance(1)
    assert engine.active() == []
    for t in (45, 48, 51, 54):  # 3 °C/s: over the 5 s window the rate passes 2 °C/s
        engine.on_readings([reading(t, clock, "esc_temperature")])
        clock.advance(1)
    [alert] = engine.active()
    assert alert.value is not None and alert.value > 2.0
    for _ in range(8):  # flat again: the rate drops under the clear threshold
        engine.on_readings([reading(54, clock, "esc_temperature")])
        clock.advance(1)
    assert engine.active() == []


def test_staleness_and_recovery() -> None:
    engine, clock, seen = make([rule(kind="stale", metric="co2", stale_after="5m")])
    engine.on_readings([reading(600, clock, "co2", "airq-1")])
    clock.advance(299)
    engine.tick()
    assert engine.active() == []
    clock.advance(1)
    engine.tick()
    [alert] = engine.active()
    assert alert.device == "airq-1" and alert.value == 300.0
    engine.tick()
    assert len(seen) == 1  # deduplicated: no second firing while it stays stale
    engine.on_readings([reading(610, clock, "co2", "airq-1")])
    assert engine.active() == []
    assert [t.kind for t in seen] == ["firing", "resolved"]


def test_availability_offline_for() -> None:
    engine, clock, _seen = make([rule(kind="offline", device="airq-*", **{"for": "60s"})])
    engine.on_availability("buggy", False)  # not matched by the device selector
    engine.on_availability("airq-2", False)
    clock.advance(59)
    engine.tick()
    assert engine.active() == []
    clock.advance(1)
    engine.tick()
    assert [(a.rule, a.device) for a in engine.active()] == [("r", "airq-2")]
    engine.on_availability("airq-2", True)
    assert engine.active() == []


def test_selectors_wildcards_and_tags() -> None:
    engine, clock, _ = make(
        [
            rule(
                metric="cell_voltage_*",
                device=["buggy*"],
                comparison="<",
                threshold=3.3,
                tags={"pack": "main-*"},
            )
        ]
    )
    engine.on_readings([reading(3.0, clock, device="truck", tags={"pack": "main-1"})])
    engine.on_readings([reading(3.0, clock, device="buggy2", tags={"pack": "spare"})])
    engine.on_readings([reading(3.0, clock, device="buggy2")])
    engine.on_readings([reading(3.0, clock, metric="pack_voltage", device="buggy2", tags={"pack": "main-1"})])  # fmt: skip
    assert engine.active() == []
    engine.on_readings([reading(3.0, clock, metric="cell_voltage_min", device="buggy2", tags={"pack": "main-1"})])  # fmt: skip
    assert [(a.device, a.metric) for a in engine.active()] == [("buggy2", "cell_voltage_min")]


def test_dedup_counts_repeats_into_one_alert() -> None:
    engine, clock, seen = make([rule(**LOW)])
    for _ in range(50):
        engine.on_readings([reading(3.1, clock)])
        clock.advance(0.1)
    [alert] = engine.active()
    assert alert.count == 50
    assert [t.kind for t in seen] == ["firing"]


def test_acknowledge_and_silence() -> None:
    engine, clock, seen = make([rule(**LOW)])
    engine.on_readings([reading(3.1, clock)])
    [alert] = engine.active()
    acked = engine.acknowledge(alert.id, "alice")
    assert (acked.acknowledged_by, acked.acknowledged_ms) == ("alice", clock.now)
    [touched] = engine.silence("r", clock.now + 60_000)
    assert touched.silenced_until_ms == clock.now + 60_000
    assert [t.kind for t in seen] == ["firing", "acknowledged", "silenced"]
    assert not seen[-1].notify
    # A re-fire inside the silence is recorded but does not notify.
    engine.on_readings([reading(3.5, clock)])
    engine.on_readings([reading(3.1, clock)])
    assert seen[-1].kind == "firing" and not seen[-1].notify
    clock.advance(61)
    engine.tick()
    assert seen[-1].kind == "unsilenced" and seen[-1].notify
    with pytest.raises(KeyError):
        engine.acknowledge(9999, "bob")
    with pytest.raises(KeyError):
        engine.silence("no_such_rule", clock.now + 1000)


def test_restart_keeps_firing_alerts_and_history(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    store = AlertStore(db, background=True)
    engine, clock, _ = make([rule(**LOW), rule(id="hot", metric="esc_temperature", threshold=95, clear=90)], store)  # fmt: skip
    engine.on_readings([reading(3.1, clock)])
    clock.advance(1)
    engine.on_readings([reading(99, clock, "esc_temperature")])
    clock.advance(1)
    engine.on_readings([reading(80, clock, "esc_temperature")])  # resolves "hot"
    engine.silence("r", clock.now + 3_600_000)
    fired_id = engine.active()[0].id
    store.close()

    store2 = AlertStore(db, background=False)
    engine2, clock2, seen2 = make([rule(**LOW), rule(id="hot", metric="esc_temperature", threshold=95, clear=90)], store2)  # fmt: skip
    clock2.now = clock.now + 10_000
    [alert] = engine2.active()
    assert (alert.id, alert.rule, alert.state) == (fired_id, "r", "firing")
    assert alert.silenced_until_ms == clock.now + 3_600_000
    # Still firing after the restart: a value between threshold and clear does not fire again.
    engine2.on_readings([reading(3.35, clock2)])
    assert seen2 == []
    history = engine2.history(10)
    assert [(a.rule, a.state) for a in history] == [("hot", "resolved"), ("r", "firing")]
    assert engine2.history(10, device="nobody") == []
    engine2.on_readings([reading(3.5, clock2)])
    assert [t.kind for t in seen2] == ["resolved"]
    # New alerts get new ids after the restart.
    engine2.on_readings([reading(3.0, clock2)])
    assert engine2.active()[0].id > fired_id
    store2.close()


def test_rule_removed_while_down_resolves(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "hub.db", background=False)
    engine, clock, _ = make([rule(**LOW)], store)
    engine.on_readings([reading(3.0, clock)])
    store.close()
    store = AlertStore(tmp_path / "hub.db", background=False)
    engine2, _, _ = make([rule(id="other", metric="co2", threshold=1)], store)
    assert engine2.active() == []
    assert engine2.history(1)[0].state == "resolved"


def test_commands_from_the_cli_are_applied_on_tick(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "hub.db", background=False)
    engine, clock, _seen = make([rule(**LOW)], store)
    engine.on_readings([reading(3.0, clock)])
    alert_id = engine.active()[0].id
    cmd = store.add_command(clock.now, "ack", str(alert_id), "cli-user", None)
    bad = store.add_command(clock.now, "ack", "12345", "cli-user", None)
    engine.tick()
    assert engine.active()[0].acknowledged_by == "cli-user"
    assert store.command_result(cmd)[1] == "ok"
    assert "no alert" in (store.command_result(bad)[1] or "")


def test_dry_run_does_not_change_state() -> None:
    engine, _, seen = make([rule(**LOW)])
    result = engine.dry_run("r", 3.0, "buggy")
    assert result["would_fire"] is True and "buggy" in str(result["message"])
    assert engine.dry_run("r", 3.45)["would_clear"] is True
    assert engine.active() == [] and seen == []


def test_index_only_evaluates_rules_of_the_metric() -> None:
    rules = [rule(id=f"r{i}", metric=f"m{i}", threshold=1.0) for i in range(200)]
    engine, clock, _ = make([*rules, rule(id="wild", metric="m1*", threshold=1.0)])
    engine.on_readings([Reading("d", "m50", 0.0, clock.now)])
    assert engine.evaluations == 1
    engine.on_readings([Reading("d", "m15", 0.0, clock.now)])
    assert engine.evaluations == 3  # r15 and the wildcard


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(3.0, 3.7, allow_nan=False), min_size=1, max_size=60))
def test_hysteresis_property(values: list[float]) -> None:
    """Never two firings without a resolve between; firing state always matches the model."""
    engine, clock, seen = make([rule(**LOW)])
    firing = False
    for value in values:
        engine.on_readings([reading(value, clock)])
        clock.advance(0.2)
        if not firing and value < 3.3:
            firing = True
        elif firing and value > 3.4:
            firing = False
        assert bool(engine.active()) == firing
    kinds = [t.kind for t in seen]
    assert all(a != b for a, b in itertools.pairwise(kinds))
    assert all(t.alert.count >= 1 for t in seen)


_SAME_TICK = """
from hub.alerts.engine import AlertEngine
from hub.alerts.rules import RuleConfig
from hub.model import Reading
now = [1_750_000_000_000]
rules = [RuleConfig.model_validate({"id": f"r{i}", "metric": "cell_voltage_avg",
          "comparison": "<", "threshold": 3.5 - i / 10, "for": "2s"}) for i in range(6)]
engine = AlertEngine(rules, None, lambda: now[0])
fired = []
engine.subscribe(lambda t: fired.append(t.alert.rule))
engine.on_readings([Reading("buggy", "cell_voltage_avg", 2.0, now[0], "V", {})])
now[0] += 2000
engine.tick()
print(",".join(fired))
"""


def test_rules_due_in_one_tick_fire_in_rule_order() -> None:
    """Alerts whose for: ends in the same tick fire in the order of the rules, in every
    process: the CI run that fired "critical" before "low" had iterated a set of keys, whose
    order follows the per-process string hash seed."""
    import os
    import subprocess
    import sys

    orders = set()
    for seed in range(8):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        done = subprocess.run(
            [sys.executable, "-c", _SAME_TICK], env=env, capture_output=True, text=True, check=True
        )
        orders.add(done.stdout.strip())
    assert orders == {"r0,r1,r2,r3,r4,r5"}


def test_a_running_hub_looks_for_commands_only_after_a_commit(tmp_path: Path) -> None:
    """In `hub run` the engine's store writes through the store thread. Its tick asks for
    commands only when something was committed to the file since it last looked (it was a
    store-thread job every second, idle or not); a command the CLI writes is still applied
    at the next tick."""
    from hub.store.sqlite import Store
    from hub.store.writer import StoreWriter

    writer = StoreWriter(Store(tmp_path / "hub.db", "normal"))
    store = AlertStore(tmp_path / "hub.db", writer=writer)
    jobs: list[object] = []
    submit = writer.submit
    writer.submit = lambda fn, *a: (jobs.append(fn), submit(fn, *a))[1]  # type: ignore[method-assign]
    engine, clock, _seen = make([rule(**LOW)], store)
    engine.on_readings([reading(3.0, clock)])
    alert_id = engine.active()[0].id
    store.flush()
    engine.tick()  # the alert's own writes were commits: it looks once
    store.flush()
    jobs.clear()
    for _ in range(5):
        engine.tick()
    assert jobs == []  # idle: no store-thread job at all

    cli = AlertStore(
        tmp_path / "hub.db", background=False
    )  # `hub alerts ack`, a process of its own
    cmd = cli.add_command(clock.now, "ack", str(alert_id), "cli-user", None)
    engine.tick()
    assert engine.active()[0].acknowledged_by == "cli-user"
    store.flush()
    assert cli.command_result(cmd)[1] == "ok"
    cli.close()
    store.close()
    writer.close()
