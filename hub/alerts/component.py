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
import logging
import time
from typing import TYPE_CHECKING, Any

from hub.alerts.engine import AlertEngine, Transition
from hub.alerts.packs import effective_rules
from hub.alerts.store import AlertStore
from hub.ingest import Committed
from hub.store.reader import ReadStore

if TYPE_CHECKING:
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


class AlertsComponent:
    name = "alerts"

    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        config = ports.config
        self.config = config.alerts
        ha = config.homeassistant
        self.store = AlertStore(config.store_path, writer=ports.writer)
        self.engine = AlertEngine(effective_rules(self.config), self.store)
        self.discovery: DiscoveryPublisher | None = None
        self.rest: RestNotifier | None = None
        if ha.discovery.enabled:
            from hub.ha.discovery import DiscoveryPublisher, slug

            main_id = ports.publisher.client_id
            client_id = f"{main_id}-ha"[-64:]
            self.discovery = DiscoveryPublisher(
                ha.discovery, config.broker, f"hub_{slug(main_id)}",
                config.data_dir / "ha_discovery.json", client_id,
            )  # fmt: skip
        if ha.rest.enabled:
            from hub.ha.rest import RestNotifier

            self.rest = RestNotifier(ha.rest)
        self._devices: dict[str, DeviceMeta] = {}
        self._sensors: set[tuple[str, str]] = set()
        self._wanted_cache: dict[tuple[str, str, str], bool] = {}
        self._announced_targets: set[tuple[str, str]] = set()
        self._seen_devices: set[str] = set()
        self._last_state: dict[tuple[str, str], float] = {}
        self._pending_state: dict[tuple[str, str], float] = {}
        self._dirty = True
        self._task: asyncio.Task[None] | None = None
        self.hub_latency_ms: list[float] = []

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        series, devices = await asyncio.to_thread(read_known, self.ports.config.store_path)
        self._devices = {d.name: d for d in devices}
        for device, metric, last_ts in series:
            self.engine.prime(device, metric, last_ts)
        for device in self._devices:
            self.engine.known_device(device)
        if self.discovery is not None:
            for device, metric, _ in series:
                self._wants(device, metric, "derived" if metric in _derived() else "mqtt")
            self.discovery.start()
            await asyncio.to_thread(self.discovery.wait_connected, 5)
            self._sync(force=True)
        self.engine.subscribe(self._on_transition)
        if self.rest is not None:
            await self.rest.start()
        self.ports.committed.subscribe(self._on_committed)
        self._task = self.ports.spawn("alerts-tick", self._tick_loop, restart=True)
        log.info(
            "Alerts: %d rules, %d firing after start",
            len(self.engine.rules),
            len(self.engine.active()),
        )

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
        interval = self.discovery.settings.state_interval
        mono = time.monotonic()
        last, pending, wants = self._last_state, self._pending_state, self._wants
        for reading in committed.readings:
            key = (reading.device, reading.metric)
            if not wants(reading.device, reading.metric, reading.source):
                continue
            if reading.device not in self._seen_devices:
                self._seen_devices.add(reading.device)
                self.discovery.publish_availability(reading.device, True)
            if mono - last.get(key, 0.0) >= interval:
                last[key] = mono
                pending.pop(key, None)
                self.discovery.publish_state(reading.device, reading.metric, reading.value)
            else:
                pending[key] = reading.value

    def _wants(self, device: str, metric: str, source: str) -> bool:
        cache_key = (device, metric, source)
        wanted = self._wanted_cache.get(cache_key)
        if wanted is None:
            assert self.discovery is not None
            wanted = self.discovery.wants_sensor(device, metric, source, self._devices.get(device))
            self._wanted_cache[cache_key] = wanted
            if wanted and (device, metric) not in self._sensors:
                self._sensors.add((device, metric))
                self._dirty = True
        return wanted

    def _on_transition(self, transition: Transition) -> None:
        if self.discovery is not None:
            if transition.alert.key not in self._announced_targets:
                self._sync()  # the entity must exist before its first state
            self.discovery.on_transition(transition, self.engine.rules.get(transition.alert.rule))
        if self.rest is not None:
            self.rest.submit(transition)

    # -- discovery sync --------------------------------------------------------------------

    def _sync(self, force: bool = False) -> None:
        discovery = self.discovery
        if discovery is None:
            return
        targets = self.engine.targets()
        new_targets = targets - self._announced_targets
        if not (force or self._dirty or new_targets or self._announced_targets - targets):
            return
        rules = self.engine.rules
        alert_targets = [(rules[r], d) for r, d in sorted(targets) if r in rules]
        configs = discovery.build_configs(
            self._devices.values(), sorted(self._sensors), alert_targets
        )
        discovery.set_configs(configs)
        for rule_id, device in sorted(new_targets if not force else targets):
            if rule_id in rules:
                discovery.publish_alert(rules[rule_id], device, self.engine.state(rule_id, device))
        self._announced_targets = targets
        self._dirty = False

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
            await asyncio.sleep(tick)
            try:
                self.engine.tick()
                mono = time.monotonic()
                if self.discovery is not None and settings is not None:
                    self._flush_states()
                    if mono >= next_resync:
                        next_resync = mono + settings.resync_interval
                        await self._resync()
                    self._sync()
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
        _, devices = await asyncio.to_thread(read_known, self.ports.config.store_path)
        fresh = {d.name: d for d in devices}
        if fresh != self._devices:
            self._devices = fresh
            self._wanted_cache.clear()
            self._sensors = {
                (d, m) for d, m in self._sensors
                if d in fresh or d in self._seen_devices
            }  # fmt: skip
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
                "sensors": len(self._sensors),
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
