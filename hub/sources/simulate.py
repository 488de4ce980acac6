"""Simulated devices: ESPHome-style air-quality nodes and RC buggies driving runs with pit stops.

The models are pure (a seeded random generator and the time are arguments) and produce MQTT
messages exactly as the real devices' paths do: air nodes publish ESPHome's own topics,
retained discovery configs and, as ESPHome's `mqtt:` component does by default (`retain:
true`), retained states (`esphome_retain=False` publishes them unretained); the buggy
publishes hub JSON as the serial logger would. The `SimulatorPublisher` sends them to a
broker with QoS 1 and bounded in-flight messages. Used by the demo (`hub run` with
simulate.enabled), by the tests and by the benchmarks.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import paho.mqtt.client as paho

from hub.bus import hub_json
from hub.bus.clients import new_client
from hub.config import BrokerConfig
from hub.derive.lipo import PackConfig
from hub.derive.rc import RcVehicleConfig
from hub.derive.session import SessionConfig
from hub.derive.vehicle import VehicleConfig
from hub.model import CATALOG, Reading

log = logging.getLogger(__name__)

OutMessage = tuple[str, bytes, bool]  # topic, payload, retain

# object_id, metric, unit, device_class, decimals (what an ESPHome node with PMS5003 + SCD41 + SGP41 shows)
AIR_SENSORS: tuple[tuple[str, str, str | None, str | None, int], ...] = (
    ("pm_1", "pm1", "µg/m³", "pm1", 0),
    ("pm_2_5", "pm2_5", "µg/m³", "pm25", 0),
    ("pm_10", "pm10", "µg/m³", "pm10", 0),
    ("co2", "co2", "ppm", "carbon_dioxide", 0),
    ("temperature", "temperature", "°C", "temperature", 1),
    ("humidity", "humidity", "%", "humidity", 1),
    ("voc_index", "voc_index", None, None, 0),
)
# The names firmware/packages/*.yaml gives these sensors: Home Assistant shows them as written.
AIR_SENSOR_NAMES = {
    "pm_1": "PM1",
    "pm_2_5": "PM2.5",
    "pm_10": "PM10",
    "co2": "CO2",
    "temperature": "Temperature",
    "humidity": "Humidity",
    "voc_index": "VOC Index",
}


@dataclass
class AirNode:
    """One ESPHome air-quality node in a room with people, cooking and ventilation."""

    name: str
    rng: random.Random
    pm2_5: float = 6.0
    co2: float = 480.0
    temperature: float = 21.0
    humidity: float = 45.0
    voc: float = 100.0
    cooking_until: float = 0.0
    retain_states: bool = True  # ESPHome's default: the broker keeps each sensor's last state

    def discovery(self) -> list[OutMessage]:
        out: list[OutMessage] = []
        # As ESPHome writes it (mqtt_component.cpp): the MAC without colons as identifier
        # and as a `mac` connection. A locally administered MAC made from the name.
        mac = f"02{zlib.crc32(self.name.encode()):08x}00"
        device = {
            "ids": mac,
            "name": self.name,
            "sw": "2026.10.0 (simulated)",
            "mdl": "esp32dev",
            "mf": "Espressif",
            "cns": [["mac", mac]],
        }
        for object_id, _, unit, device_class, _ in AIR_SENSORS:
            config: dict[str, object] = {
                "name": AIR_SENSOR_NAMES[object_id],
                "stat_t": f"{self.name}/sensor/{object_id}/state",
                "avty_t": f"{self.name}/status",
                "uniq_id": f"{device['ids']}-{object_id}",
                "stat_cla": "measurement",
                "dev": device,
            }
            if unit:
                config["unit_of_meas"] = unit
            if device_class:
                config["dev_cla"] = device_class
            out.append(
                (f"homeassistant/sensor/{self.name}/{object_id}/config", orjson.dumps(config), True)
            )
        out.append((f"{self.name}/status", b"online", True))
        return out

    def step(self, now: float, dt: float) -> list[OutMessage]:
        rng = self.rng
        hour = (now / 3600) % 24
        occupied = 7 <= hour < 23
        if self.cooking_until < now and rng.random() < dt / 3600:
            self.cooking_until = now + rng.uniform(600, 1800)
        cooking = self.cooking_until > now
        target_pm = 35.0 if cooking else 5.0 + 3 * math.sin(now / 7200)
        self.pm2_5 += (target_pm - self.pm2_5) * min(1.0, dt / 300) + rng.gauss(0, 0.6)
        self.pm2_5 = max(0.0, self.pm2_5)
        target_co2 = 1100.0 if occupied else 450.0
        self.co2 += (target_co2 - self.co2) * min(1.0, dt / 1800) + rng.gauss(0, 8)
        self.co2 = max(400.0, self.co2)
        self.temperature += (21.0 + 1.5 * math.sin(now / 43200 * math.pi) - self.temperature) * min(
            1.0, dt / 3600
        ) + rng.gauss(0, 0.05)
        self.humidity += (45.0 + (10 if cooking else 0) - self.humidity) * min(
            1.0, dt / 900
        ) + rng.gauss(0, 0.2)
        self.voc += ((250.0 if cooking else 100.0) - self.voc) * min(1.0, dt / 600) + rng.gauss(
            0, 3
        )
        values = {
            "pm_1": self.pm2_5 * 0.7,
            "pm_2_5": self.pm2_5,
            "pm_10": self.pm2_5 * 1.3,
            "co2": self.co2,
            "temperature": self.temperature,
            "humidity": min(100.0, max(0.0, self.humidity)),
            "voc_index": min(500.0, max(1.0, self.voc)),
        }
        out = []
        for object_id, _, _, _, decimals in AIR_SENSORS:
            text = f"{values[object_id]:.{decimals}f}"
            out.append((f"{self.name}/sensor/{object_id}/state", text.encode(), self.retain_states))
        return out


# Resting voltage of a LiPo cell by state of charge (0..1), a typical curve.
_OCV = (
    (0.0, 3.30),
    (0.05, 3.50),
    (0.1, 3.60),
    (0.2, 3.70),
    (0.4, 3.79),
    (0.6, 3.87),
    (0.8, 4.00),
    (0.9, 4.08),
    (1.0, 4.20),
)


def lipo_ocv(soc: float) -> float:
    soc = min(1.0, max(0.0, soc))
    for (s0, v0), (s1, v1) in itertools.pairwise(_OCV):
        if soc <= s1:
            return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
    return _OCV[-1][1]


@dataclass
class Buggy:
    """An RC buggy at the track: throttle bursts, current draw, voltage sag, heating.

    It drives runs of `drive_time` seconds with a pit stop of `pit_stop` seconds between
    them (0: it never stops), so the hub sees drive sessions begin and end. Within a run the
    throttle is never off long enough to look like a stop.
    """

    name: str
    rng: random.Random
    cells: int = 3
    capacity_mah: float = 5000.0
    resistance_per_cell: float = 0.006
    kv: float = 4000.0
    poles: int = 4
    soc: float = 1.0
    consumed_mah: float = 0.0
    esc_temp: float = 25.0
    motor_temp: float = 25.0
    throttle: float = 0.0
    phase_until: float = 0.0
    target: float = 0.0
    drive_time: float = 45.0
    pit_stop: float = 30.0
    in_pit: bool = False
    run_until: float = 0.0  # end of the current run, or of the pit stop

    def step(self, now: float, dt: float) -> list[Reading]:
        rng = self.rng
        if self.phase_until == 0.0:
            # On the table first: a resting voltage sets the cell count.
            self.phase_until = now + 3.0
            self.run_until = self.phase_until + self.drive_time
        if self.pit_stop > 0 and now >= self.run_until:
            self.in_pit = not self.in_pit
            self.run_until = now + (self.pit_stop if self.in_pit else self.drive_time)
            self.target, self.phase_until = 0.0, now
        if self.in_pit:
            self.target = 0.0
        elif now >= self.phase_until:
            # Laps: full-throttle straights, partial corners, a lift now and then.
            lifted = self.target == 0.0
            self.target = rng.choice((1.0, 0.9, 0.6, 0.4, 0.2, 0.0))
            if lifted and self.target == 0.0:
                self.target = 0.2  # never two lifts in a row
            length = rng.uniform(0.5, 3.0)
            # A lift is short: the motor is still turning when the throttle comes back.
            self.phase_until = now + (min(length, 1.0) if self.target == 0.0 else length)
        self.throttle += (self.target - self.throttle) * min(1.0, dt / 0.3)
        current = (
            2.0 + 75.0 * self.throttle**1.5 + rng.gauss(0, 0.8) if self.throttle > 0.02 else 0.4
        )
        current = max(0.0, current)
        ocv = lipo_ocv(self.soc) * self.cells
        voltage = ocv - current * self.resistance_per_cell * self.cells + rng.gauss(0, 0.01)
        used = current * dt / 3.6  # mAh
        self.consumed_mah += used
        self.soc = max(0.0, self.soc - used / self.capacity_mah)
        self.esc_temp += (current * current * 0.00035 - (self.esc_temp - 25.0) * 0.02) * dt
        self.motor_temp += (current * current * 0.0006 - (self.motor_temp - 25.0) * 0.015) * dt
        rpm = self.kv * voltage * self.throttle * 0.85
        ts = int(now * 1000)
        values = {
            "pack_voltage": voltage,
            "current": current,
            "esc_temperature": self.esc_temp,
            "motor_temperature": self.motor_temp,
            "erpm": rpm * self.poles / 2,
            "rpm": rpm,
            "consumed_mah": self.consumed_mah,
            "throttle": self.throttle * 100,
        }
        return [
            Reading(self.name, metric, round(value, 4), ts, CATALOG[metric].unit, {}, "simulator")
            for metric, value in values.items()
        ]


class Simulation:
    """All simulated devices together; `messages(now, dt)` yields what they publish."""

    def __init__(
        self, airq_nodes: int, buggies: int, seed: int | None = None, prefix: str = "hub",
        esphome_retain: bool = True, *, drive_time: float = 45.0, pit_stop: float = 30.0,
    ) -> None:  # fmt: skip
        rng = random.Random(seed)
        self.nodes = [
            AirNode(f"airq-{i + 1}", random.Random(rng.random()), retain_states=esphome_retain)
            for i in range(airq_nodes)
        ]
        self.buggies = [
            Buggy(
                f"buggy-{i + 1}" if buggies > 1 else "buggy",
                random.Random(rng.random()),
                drive_time=drive_time,
                pit_stop=pit_stop,
            )
            for i in range(buggies)
        ]
        self.prefix = prefix

    def describe(self) -> str:
        """'3 air-quality nodes and 1 buggy (runs of 45 s, pit stops of 30 s)', for the log."""
        nodes = len(self.nodes)
        text = f"{nodes} air-quality node{'' if nodes == 1 else 's'}"
        if self.buggies:
            count = len(self.buggies)
            text += f" and {count} bugg{'y' if count == 1 else 'ies'}"
            buggy = self.buggies[0]
            if buggy.pit_stop > 0:
                text += f" (runs of {buggy.drive_time:g} s, pit stops of {buggy.pit_stop:g} s)"
            else:
                text += " (driving without a stop)"
        return text

    def discovery(self) -> list[OutMessage]:
        return [m for node in self.nodes for m in node.discovery()]

    def buggy_names(self) -> list[str]:
        return [buggy.name for buggy in self.buggies]

    def air_messages(self, now: float, dt: float) -> Iterator[OutMessage]:
        for node in self.nodes:
            yield from node.step(now, dt)

    def buggy_messages(self, now: float, dt: float) -> Iterator[OutMessage]:
        for buggy in self.buggies:
            yield (
                f"{self.prefix}/readings/{buggy.name}",
                hub_json.encode(buggy.step(now, dt)),
                False,
            )


class SimulatorPublisher:
    """Publishes to a broker with QoS 1, never more than `max_inflight` unacknowledged."""

    def __init__(self, host: str, port: int, client_id: str = "hub-simulator", max_inflight: int = 500,
                 username: str | None = None, password: str | None = None,
                 broker: BrokerConfig | None = None) -> None:  # fmt: skip
        # From the hub's broker config when there is one (its login and TLS), else plain.
        self.client = new_client(
            client_id, broker, username=username, password=password, logger=None
        )
        # A device's connection, not the hub's: Nagle stays on, as on a real node.
        self.client.on_socket_open = None
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self._window = threading.BoundedSemaphore(max_inflight)
        self.client.on_publish = self._on_publish
        self.host, self.port = host, port
        self.published = 0
        self.acked = 0
        self._connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: (
            self._connected.set() if not rc.is_failure else None
        )

    def _on_publish(
        self, client: paho.Client, userdata: object, mid: int, rc: object, props: object
    ) -> None:
        self.acked += 1
        self._window.release()

    def connect(self, timeout: float = 10) -> None:
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise ConnectionError(f"simulator could not connect to {self.host}:{self.port}")

    def publish(self, topic: str, payload: bytes, retain: bool = False, qos: int = 1) -> None:
        if qos:
            while not self._window.acquire(timeout=1.0):
                pass  # the broker is slow or away: wait, never drop
        self.client.publish(topic, payload, qos=qos, retain=retain)
        self.published += 1

    def flush(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while self.acked < self.published and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.acked >= self.published

    def close(self) -> None:
        self.flush(5)
        self.client.disconnect()
        self.client.loop_stop()


def run_rounds(sim: Simulation, publisher: SimulatorPublisher, rounds: int, start: float, air_interval: float,
               buggy_rate: float) -> int:  # fmt: skip
    """Publish `rounds` air-node rounds and `rounds` buggy frames, as fast as allowed (tests, bench)."""
    count = 0
    for topic, payload, retain in sim.discovery():
        publisher.publish(topic, payload, retain)
    for i in range(rounds):
        now = start + i * air_interval
        for topic, payload, retain in sim.air_messages(now, air_interval):
            publisher.publish(topic, payload, retain)
            count += 1
        for topic, payload, retain in sim.buggy_messages(start + i / buggy_rate, 1 / buggy_rate):
            publisher.publish(topic, payload, retain)
            count += 1
    publisher.flush()
    return count


def run_live(sim: Simulation, publisher: SimulatorPublisher, air_interval: float, buggy_rate: float,
             stop: threading.Event, duration: float | None = None) -> None:  # fmt: skip
    """Publish in real time until `stop` is set. Blocking: run it in its own thread, so a
    broker that is away stalls only the simulator, never the hub's loop."""
    for t, p, r in sim.discovery():
        publisher.publish(t, p, r)
    started = time.time()
    next_air = started
    buggy_dt = 1.0 / buggy_rate
    next_buggy = started
    while not stop.is_set():
        now = time.time()
        if duration is not None and now - started >= duration:
            break
        if now >= next_air:
            for t, p, r in sim.air_messages(now, air_interval):
                publisher.publish(t, p, r)
            next_air += air_interval
        if now >= next_buggy:
            for t, p, r in sim.buggy_messages(now, buggy_dt):
                publisher.publish(t, p, r)
            next_buggy += buggy_dt
        stop.wait(max(0.0, min(next_air, next_buggy) - time.time()))


def simulated_vehicle(name: str, session_gap: float | None = None) -> RcVehicleConfig:
    """What the simulated buggy is: a 1:10 buggy with a 4-pole motor, 17/46 gearing, a 2.6:1
    transmission and 85 mm tyres, on a 3S 5,000 mAh pack (as `Buggy` models it). A session
    ends after `session_gap` seconds of stillness (shorter than its pit stops), else after
    the default idle time."""
    session = SessionConfig() if session_gap is None else SessionConfig(idle_timeout=session_gap)
    return RcVehicleConfig(
        device=name,
        drivetrain=VehicleConfig(
            motor_poles=4, pinion_teeth=17, spur_teeth=46, internal_ratio=2.6, tyre_diameter_mm=85.0
        ),
        pack=PackConfig(cell_count=3, capacity_mah=5000.0),
        session=session,
    )
