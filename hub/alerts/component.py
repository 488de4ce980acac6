"""The "alerts" component of `hub run`: engine + Home Assistant discovery + REST events.

Fed by the committed-batch port (after every commit: readings and availability), ticked for
`for:` durations, staleness and silences. The engine's transitions go to the alert
binary_sensors (MQTT) and to the REST notifier. The engine is `component.engine` (the web API
reaches it through the `find` port: `ports.find("alerts").engine`). Alert rows are written
through the store writer port, like every other write of the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from hub.alerts.engine import AlertEngine, Transition
from hub.alerts.packs import effective_rules
from hub.alerts.store import AlertStore
from hub.ingest import Committed
from hub.model import CATALOG
from hub.runtime import until_tick
from hub.store.reader import ReadStore

if TYPE_CHECKING:
    from hub.alerts.pg_store import PgAlertStore
    from hub.ha.discovery import DeviceMeta, DiscoveryPublisher
    from hub.ha.rest import RestNotifier
    from hub.ports import Ports

log = logging.getLogger(__name__)


def read_known(path: Any) -> tuple[list[tuple[str, str, int]], list[DeviceMeta]]:
    """(device, metric, last_ts) of every series and the devices table, read-only."""
    from hub.ha.discovery import DeviceMeta

    try:
        store = ReadStore(path)
    except Exception as exc:  # no store yet on a first start
        log.debug("No store to read known series from: %s", exc)
        return [], []
    try:
        devices = [DeviceMeta(*row) for row in store.device_identities()]
        return store.known_series(), devices
    except Exception as exc:
        log.warning("Cannot read known series and devices: %s", exc)
        return [], []
    finally:
        store.close()


# A device first seen while the hub runs gets its entities this long after its first reading
# unless Home Assistant's view of it (the node's own discovery) arrives sooner: announcing it
# as the hub's own device first and moving it later would leave an empty device behind.
IDENTITY_GRACE_S = 2.0
# After removing an entity whose device changed, wait this long before announcing it anew.
READD_DELAY_S = 1.0


class AlertsComponent:
    name = "alerts"

    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        config = ports.config
        self.config = config.alerts
        ha = config.homeassistant
        # On a leader worker the store is PostgreSQL, through the feed's fenced connection.
        db = getattr(ports.find("feed"), "db", None)
        self.pg_store: PgAlertStore | None = None
        self.store: AlertStore
        if db is not None:
            from hub.alerts.pg_store import PgAlertStore

            self.store = self.pg_store = PgAlertStore(db)
        else:
            self.store = AlertStore(config.store_path, writer=ports.writer)
        self.engine = AlertEngine(effective_rules(self.config), self.store)
        # Firing alerts whose row is not committed yet: not shown to Home Assistant before.
        self._uncommitted: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.discovery: DiscoveryPublisher | None = None
        self.rest: RestNotifier | None = None
        if ha.discovery.enabled:
            from hub.ha.discovery import DiscoveryPublisher, slug

            main_id = ports.publisher.client_id
            client_id = f"{main_id}-ha"[-64:]
            # The hub's identity in Home Assistant: the configured client id (workers share it;
            # each worker's own id ends in -<worker id>), else this connection's.
            hub_id = f"hub_{slug(config.broker.client_id or main_id)}"
            self.discovery = DiscoveryPublisher(
                ha.discovery, config.broker, hub_id,
                config.data_dir / "ha_discovery.json", client_id,
                metric_map=config.ingest.esphome.metric_map,
                # A worker's main connection announces only itself: whichever worker leads
                # says that the hub (its alerts and discovery) is online.
                status_will=db is not None,
            )  # fmt: skip
        if ha.rest.enabled:
            from hub.ha.rest import RestNotifier

            self.rest = RestNotifier(ha.rest, dead_letter=self._dead_letter)
        self._devices: dict[str, DeviceMeta] = {}  # the store's devices table
        self._series: dict[tuple[str, str], str] = {}  # (device, metric) -> source
        self._first_seen: dict[str, float] = {}  # device -> monotonic; 0 = known at start
        self._wanted_cache: dict[tuple[str, str, str], bool] = {}
        self._wanted_generation = -1
        self._known_targets: set[tuple[str, str]] = set()
        self._announced_targets: set[tuple[str, str]] = set()
        self._recheck_at: float | None = None
        self._seen_devices: set[str] = set()
        self._last_state: dict[tuple[str, str], float] = {}
        self._pending_state: dict[tuple[str, str], float] = {}
        self._value_at_firing: dict[int, float | None] = {}
        self._attributes_sent: dict[tuple[str, str], tuple[float | None, float]] = {}
        self._sensor_count = 0
        self._dirty = True
        self._task: asyncio.Task[None] | None = None
        self.hub_latency_ms: list[float] = []

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        series, devices = await asyncio.to_thread(self._read_known)
        self._devices = {d.name: d for d in devices}
        for device, metric, last_ts in series:
            self.engine.prime(device, metric, last_ts)
        for device in self._devices:
            self.engine.known_device(device)
        for alert in self.engine.active():
            self._value_at_firing[alert.id] = await asyncio.to_thread(self._fired_at, alert.id)
        if self.discovery is not None:
            derived = _derived()
            for device, metric, _ in series:
                self._series[(device, metric)] = "derived" if metric in derived else "mqtt"
                self._first_seen[device] = 0.0
            for device in self._devices:
                self._first_seen[device] = 0.0
            self.discovery.start()
            if await asyncio.to_thread(self.discovery.wait_connected, 5):
                # The nodes' retained discovery first: the first plan must already know
                # which nodes Home Assistant has by themselves.
                await asyncio.to_thread(self.discovery.wait_settled, 3.0)
            self._sync(force=True)
        self.engine.subscribe(self._on_transition if self.pg_store is None else self._after_commit)
        if self.rest is not None:
            await self.rest.start()
        self.ports.committed.subscribe(self._on_committed)
        self._task = self.ports.spawn("alerts-tick", self._tick_loop, restart=True)
        log.info(
            "Alerts: %d rules, %d firing after start",
            len(self.engine.rules),
            len(self.engine.active()),
        )

    def _read_known(self) -> tuple[list[tuple[str, str, int]], list[DeviceMeta]]:
        if self.pg_store is None:
            return read_known(self.ports.config.store_path)
        from hub.ha.discovery import DeviceMeta

        try:
            series, devices = self.pg_store.read_known()
        except Exception as exc:
            log.warning("Cannot read known series and devices: %s", exc)
            return [], []
        return series, [DeviceMeta(*row) for row in devices]

    def _after_commit(self, transition: Transition) -> None:
        """A transition is published (MQTT, REST) once its alert row is committed: a leader
        killed in between has announced nothing its successor does not know about."""
        alert_id = transition.alert.id
        if transition.kind == "firing":
            self._uncommitted.add(alert_id)
        assert self.pg_store is not None and self._loop is not None
        loop = self._loop

        def done(committed: bool) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the worker stopped
                loop.call_soon_threadsafe(self._committed, transition, committed)

        self.pg_store.when_committed(done)

    def _committed(self, transition: Transition, committed: bool) -> None:
        self._uncommitted.discard(transition.alert.id)
        if committed:
            self._on_transition(transition)
        else:
            log.warning(
                "Alert %s on %s (%s) not stored: not announced",
                transition.alert.rule, transition.alert.device, transition.kind,
            )  # fmt: skip

    def _fired_at(self, alert_id: int) -> float | None:
        for _, kind, value, _ in self.store.events(alert_id):
            if kind == "firing":
                return value
        return None

    async def stop(self) -> None:
        self.ports.committed.unsubscribe(self._on_committed)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.engine.tick()
        if self.rest is not None:
            await self.rest.stop()
        if self.discovery is not None:
            self._flush_states(force=True)
            self.discovery.stop()
        await asyncio.to_thread(self.store.close)

    async def _dead_letter(self, reason: str, detail: str, payload: bytes) -> None:
        """A notification Home Assistant refused for good, kept with the reason."""
        from hub.store.sqlite import Batch, DeadLetter

        writer = self.ports.writer
        letter = DeadLetter(int(time.time() * 1000), "homeassistant", None, reason, detail, payload)
        await writer.call(writer.store.commit, Batch(dead_letters=[letter]))

    # -- ingest side ---------------------------------------------------------------------

    def _on_committed(self, committed: Committed) -> None:
        engine = self.engine
        now = engine.clock()
        for device, online, _ in committed.availability:
            engine.on_availability(device, online, now)
            if self.discovery is not None:
                self.discovery.publish_availability(device, online)
        engine.on_readings(committed.readings)
        if self.discovery is None:
            return
        with self.discovery.batch():
            self._mirror(committed)

    def _mirror(self, committed: Committed) -> None:
        """The batch's latest value of each announced series, to Home Assistant (at most one
        state per series and state_interval; the rest waits in _pending_state)."""
        assert self.discovery is not None
        interval = self.discovery.settings.state_interval
        mono = time.monotonic()
        last, pending, wants = self._last_state, self._pending_state, self._wants
        # Only the latest value of a series counts (state_interval keeps one a second), so the
        # batch is reduced to one reading per series before any per-reading work: with group
        # commit a batch holds many readings of each busy series.
        latest = {(r.device, r.metric, r.source): r.value for r in committed.readings}
        series, first_seen = self._series, self._first_seen
        for (device, metric, source), value in latest.items():
            key = (device, metric)
            if key not in series:
                # A new series (or a node first seen while the hub runs): plan its entity
                # from this reading on; the state below is retained, so the entity shows it.
                series[key] = source
                first_seen.setdefault(device, mono)
                self._dirty = True
            if not wants(device, metric, source):
                continue
            if device not in self._seen_devices:
                self._seen_devices.add(device)
                self.discovery.publish_availability(device, True)
            key = (device, metric)
            if mono - last.get(key, 0.0) >= interval:
                last[key] = mono
                pending.pop(key, None)
                self.discovery.publish_state(device, metric, value)
            else:
                pending[key] = value

    def _wants(self, device: str, metric: str, source: str) -> bool:
        """Whether the hub announces (and publishes states of) this series. Never cached
        across a change of what Home Assistant knows: a node's discovery arriving after its
        first reading must not leave a sensor announced whose states are no longer sent."""
        discovery = self.discovery
        assert discovery is not None
        self._check_generation()
        cache_key = (device, metric, source)
        wanted = self._wanted_cache.get(cache_key)
        if wanted is None:
            wanted = discovery.wants_sensor(device, metric, source, discovery.node(device))
            self._wanted_cache[cache_key] = wanted
        return wanted

    def _check_generation(self) -> None:
        """What Home Assistant knows changed: forget cached decisions, re-plan."""
        assert self.discovery is not None
        if self.discovery.generation != self._wanted_generation:
            self._wanted_generation = self.discovery.generation
            self._wanted_cache.clear()
            self._dirty = True

    def _on_transition(self, transition: Transition) -> None:
        alert = transition.alert
        if transition.kind == "firing":
            self._value_at_firing[alert.id] = alert.value
        if self.discovery is not None:
            if alert.key not in self._announced_targets:
                self._sync()  # the entity must exist before its first state
            rule = self.engine.rules.get(alert.rule)
            if rule is not None:
                self.discovery.publish_alert(
                    rule, alert.device, alert if alert.firing else None,
                    self._value_at_firing.get(alert.id),
                )  # fmt: skip
                self._attributes_sent[alert.key] = (alert.value, time.monotonic())
        if not alert.firing:
            self._value_at_firing.pop(alert.id, None)
        if self.rest is not None:
            self.rest.submit(transition)

    # -- discovery sync --------------------------------------------------------------------

    def _ready(self, device: str, mono: float) -> bool:
        """Announce a device's entities once Home Assistant's view of it is settled: the node
        is known to be in HA by itself, or it has had the grace period to say so."""
        assert self.discovery is not None
        if self.discovery.node(device) is not None:
            return True
        return mono - self._first_seen.get(device, 0.0) >= IDENTITY_GRACE_S

    def _meta(self, device: str) -> DeviceMeta:
        from hub.ha.discovery import DeviceMeta

        assert self.discovery is not None
        stored = self._devices.get(device)
        meta = DeviceMeta(device) if stored is None else dataclasses.replace(stored)
        meta.node = self.discovery.node(device)
        if not meta.kind or meta.kind == "other":
            families = {CATALOG[m].family for d, m in self._series if d == device and m in CATALOG}
            meta.kind = "rc" if "rc" in families else ("airq" if "air" in families else "other")
        return meta

    def _sync(self, force: bool = False) -> None:
        discovery = self.discovery
        if discovery is None:
            return
        self._check_generation()
        mono = time.monotonic()
        targets = self.engine.targets()
        due = self._recheck_at is not None and mono >= self._recheck_at
        if not (force or self._dirty or due or targets != self._known_targets):
            return
        self._known_targets = set(targets)
        self._dirty = False
        ready: dict[str, bool] = {}

        def is_ready(device: str) -> bool:
            if device not in ready:
                ready[device] = self._ready(device, mono)
            return ready[device]

        sensors = sorted(
            key for key, source in self._series.items()
            if self._wants(key[0], key[1], source) and is_ready(key[0])
        )  # fmt: skip
        rules = self.engine.rules
        announced = {(r, d) for r, d in targets if r in rules and is_ready(d)}
        devices = {d for d, _ in sensors} | {d for _, d in announced}
        configs = discovery.build_configs(
            [self._meta(d) for d in sorted(devices)],
            sensors,
            [(rules[r], d) for r, d in sorted(announced)],
        )
        moved = discovery.set_configs(configs)
        self._sensor_count = len(sensors)
        waiting = [self._first_seen.get(d, 0.0) + IDENTITY_GRACE_S for d, r in ready.items() if not r]  # fmt: skip
        if moved:
            waiting.append(mono + READD_DELAY_S)
        self._recheck_at = min(waiting) if waiting else None
        new = announced if force else announced - self._announced_targets
        for rule_id, device in sorted(new):
            alert = self.engine.state(rule_id, device)
            if alert is not None and alert.id in self._uncommitted:
                continue  # its firing transition publishes it, once committed
            discovery.publish_alert(
                rules[rule_id], device, alert,
                self._value_at_firing.get(alert.id) if alert else None,
            )  # fmt: skip
        self._announced_targets = announced

    def _refresh_firing(self) -> None:
        """Firing alerts' attributes follow the value (at most once per state_interval)."""
        discovery = self.discovery
        assert discovery is not None
        mono = time.monotonic()
        interval = discovery.settings.state_interval
        for alert in self.engine.active():
            if alert.id in self._uncommitted:
                continue
            value, at = self._attributes_sent.get(alert.key, (None, 0.0))
            if alert.value == value or mono - at < interval:
                continue
            rule = self.engine.rules.get(alert.rule)
            if rule is None or alert.key not in self._announced_targets:
                continue
            discovery.publish_alert(rule, alert.device, alert, self._value_at_firing.get(alert.id))
            self._attributes_sent[alert.key] = (alert.value, mono)

    def _flush_states(self, force: bool = False) -> None:
        """Publish the held-back latest values whose `state_interval` has passed (all of them
        when stopping). Flushing every held-back value at each tick sent a busy series' state
        once per tick instead of once per interval: at 200 series and a 0.2 s tick, 1,000
        states a second that Home Assistant had to digest, and the alert states queued
        behind them."""
        discovery = self.discovery
        if discovery is None or not self._pending_state:
            return
        mono = time.monotonic()
        due_before = mono - discovery.settings.state_interval
        last, pending = self._last_state, self._pending_state
        due = [key for key in pending if force or last.get(key, 0.0) <= due_before]
        if not due:
            return
        with discovery.batch():
            for key in due:
                last[key] = mono
                discovery.publish_state(key[0], key[1], pending.pop(key))

    async def _tick_loop(self) -> None:
        tick = max(0.05, self.config.tick)
        settings = self.discovery.settings if self.discovery else None
        next_resync = time.monotonic() + (settings.resync_interval if settings else 3600)
        next_hub = time.monotonic()
        next_purge = time.monotonic() + 60
        while True:
            await asyncio.sleep(until_tick(tick))
            try:
                self.engine.tick()
                mono = time.monotonic()
                if self.discovery is not None and settings is not None:
                    self._flush_states()
                    if mono >= next_resync:
                        next_resync = mono + settings.resync_interval
                        await self._resync()
                    self._sync()
                    self._refresh_firing()
                    if mono >= next_hub:
                        next_hub = mono + settings.hub_interval
                        self._publish_hub()
                if mono >= next_purge:
                    next_purge = mono + 3600
                    cutoff = self.engine.clock() - int(self.config.history_retention * 1000)
                    await asyncio.to_thread(self.store.purge, cutoff)
            except Exception:
                log.exception("Alert tick failed")

    async def _resync(self) -> None:
        """The store's devices table (manufacturer, model, kind) and devices the engine should
        watch for going offline. Which sensors are announced is re-planned from the series
        seen and what Home Assistant knows at every sync, so nothing is dropped here."""
        _, devices = await asyncio.to_thread(self._read_known)
        fresh = {d.name: d for d in devices}
        if fresh != self._devices:
            self._devices = fresh
            for device in fresh:
                self.engine.known_device(device)
            self._dirty = True

    def _publish_hub(self) -> None:
        assert self.discovery is not None
        try:
            status = self.ports.status()
        except Exception:
            log.exception("Hub status for HA failed")
            return
        ingest = status.get("ingest", {})
        self.discovery.publish_hub(
            {
                "messages_per_s": float(ingest.get("messages_per_s", 0.0)),
                "readings_stored": float(ingest.get("readings_stored", 0)),
                "rejected_total": float(ingest.get("rejected_total", 0)),
                "alerts_firing": float(len(self.engine.active())),
                "store_size": float(status.get("store", {}).get("size_bytes", 0)),
            }
        )

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.engine.status())
        if self.discovery is not None:
            data["discovery"] = {
                **vars(self.discovery.stats),
                "sensors": self._sensor_count,
                "alert_entities": len(self._announced_targets),
            }
        if self.rest is not None:
            data["rest"] = self.rest.status()
        return data


def _derived() -> frozenset[str]:
    from hub.ha.discovery import DERIVED_METRICS

    return DERIVED_METRICS


def build(ports: Ports) -> AlertsComponent | None:
    config = getattr(ports.config, "alerts", None)
    if config is None or not config.enabled:
        return None
    return AlertsComponent(ports)
