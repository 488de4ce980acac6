"""The logger against a real pseudo-terminal (pyserial on the slave side) and real Mosquitto.

A writer thread plays Hobbywing 0xFE frames at 115200-baud pacing into the pty master, with
garbage and split writes between them. Readings must reach the broker, in order, also across
a broker outage (store-and-forward).
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from hub.bus.hub_json import decode
from hub.model import Event, Reading
from hub.sources.serial.capture import CaptureWriter, read_capture
from hub.sources.serial.hobbywing import encode_v5
from hub.sources.serial.logger import SerialLogger
from hub.sources.serial.spool import SpoolingPublisher
from tests.support.mosquitto import Mosquitto

BAUD = 115200


def v5_frame(i: int) -> bytes:
    body = bytes.fromhex("FE0100033 05C170600".replace(" ", "")) + bytes([50, 50, 1, 0])
    body += (1000 + i).to_bytes(2, "little") + (100 + i).to_bytes(2, "little") + b"\xff\xff"
    return encode_v5(body + bytes([40, 0xFF, 45, 0xFF, 0xFF]) + b"\xff" * 6)


def voltage(i: int) -> float:
    return round((100 + i) / 10, 1)


class Pty:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.name = os.ttyname(self.slave)
        self.rng = random.Random(7)

    def play(self, frames: list[bytes], gap: float = 0.004) -> None:
        """Frames at line-rate pacing, with garbage and split writes between them."""
        for frame in frames:
            junk = bytes(
                self.rng.choice(b"\x00\x13\x55\xaa\xfe\x01") for _ in range(self.rng.randrange(6))
            )
            data = junk + frame
            cut = self.rng.randrange(1, len(data))
            for part in (data[:cut], data[cut:]):
                os.write(self.master, part)
                time.sleep(len(part) * 10 / BAUD)
            time.sleep(gap)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            os.close(fd)


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.close()


def wait_for(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def start_logger(logger: SerialLogger) -> threading.Thread:
    logger.open()
    thread = threading.Thread(target=logger.run, daemon=True)
    thread.start()
    return thread


def test_logger_decodes_every_frame_from_a_pty(pty: Pty, tmp_path: Path) -> None:
    got: list[tuple[str, list[Reading], list[Event]]] = []
    capture = CaptureWriter(tmp_path / "cap", "hobbywing-v5", BAUD, pty.name)
    logger = SerialLogger(
        pty.name, "buggy", lambda d, r, e: got.append((d, r, e)), "hobbywing-v5", BAUD,
        capture=capture, publish_interval=0.05,
    )  # fmt: skip
    thread = start_logger(logger)
    pty.play([v5_frame(i) for i in range(40)])
    assert wait_for(lambda: logger.counters.frames == 40)
    logger.stop()
    thread.join(5)
    logger.close()
    volts = [r.value for _, rs, _ in got for r in rs if r.metric == "pack_voltage"]
    assert volts == [voltage(i) for i in range(40)]
    assert logger.framer is not None and logger.framer.stats.frames == 40
    assert all(d == "buggy" for d, _, _ in got)
    (path,) = (tmp_path / "cap").glob("*.csv")
    meta, chunks = read_capture(path)
    assert (
        meta.protocol == "hobbywing-v5"
        and sum(len(c) for _, c in chunks) == logger.framer.stats.bytes
    )


def test_logger_auto_detects_protocol(pty: Pty) -> None:
    got: list[Reading] = []
    logger = SerialLogger(
        pty.name, "buggy", lambda d, r, e: got.extend(r), "auto", detect_seconds=0.6
    )
    stop = threading.Event()

    def play() -> None:
        i = 0
        while not stop.is_set() and i < 400:
            pty.play([v5_frame(i)])
            i += 1

    writer = threading.Thread(target=play, daemon=True)
    writer.start()
    try:
        logger.open()
        assert (logger.protocol, logger.baud) == ("hobbywing-v5", 115200)
        thread = threading.Thread(target=logger.run, args=(0.5,), daemon=True)
        thread.start()
        thread.join(5)
    finally:
        stop.set()
        writer.join(5)
        logger.close()
    assert any(r.metric == "pack_voltage" for r in got)


class Subscriber:
    """A persistent-session QoS 1 subscriber collecting pack voltages in arrival order."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: queue.Queue[bytes] = queue.Queue()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub", clean_session=False
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("hub/readings/#", qos=1)
        self.client.on_message = lambda c, u, m: self.messages.put(m.payload)
        subscribed = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, rc, p: subscribed.set()
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(5), "no SUBACK from the broker"
        self.volts: list[float] = []

    def collect(self) -> list[float]:
        while True:
            try:
                payload = self.messages.get_nowait()
            except queue.Empty:
                return self.volts
            now = int(time.time() * 1000)
            readings, _ = decode("buggy", payload, now, now)
            self.volts += [r.value for r in readings if r.metric == "pack_voltage"]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def first_seen(values: list[float]) -> list[float]:
    return list(dict.fromkeys(values))


@pytest.mark.mosquitto
def test_readings_reach_mosquitto(pty: Pty, tmp_path: Path, mosquitto: Mosquitto) -> None:
    sub = Subscriber(mosquitto)
    publisher = SpoolingPublisher(mosquitto.url, tmp_path / "spool.jsonl", client_id="test-logger")
    publisher.start()
    logger = SerialLogger(
        pty.name, "buggy", publisher.submit, "hobbywing-v5", BAUD, publish_interval=0.05
    )
    thread = start_logger(logger)
    try:
        pty.play([v5_frame(i) for i in range(30)])
        expected = [voltage(i) for i in range(30)]
        assert wait_for(lambda: first_seen(sub.collect()) == expected), sub.volts
    finally:
        logger.stop()
        thread.join(5)
        logger.close()
        publisher.close()
        sub.close()


@pytest.mark.mosquitto
def test_broker_outage_spools_and_forwards_in_order(
    pty: Pty, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    sub = Subscriber(mosquitto)
    publisher = SpoolingPublisher(mosquitto.url, tmp_path / "spool.jsonl", client_id="test-logger")
    publisher.start()
    logger = SerialLogger(
        pty.name, "buggy", publisher.submit, "hobbywing-v5", BAUD, publish_interval=0.05
    )
    thread = start_logger(logger)
    try:
        pty.play([v5_frame(i) for i in range(20)])
        assert wait_for(lambda: len(first_seen(sub.collect())) == 20), sub.volts
        mosquitto.stop()
        pty.play([v5_frame(i) for i in range(20, 40)])
        assert wait_for(lambda: logger.counters.frames == 40)
        assert wait_for(lambda: publisher.spool.pending_bytes() > 0)  # held back, not lost
        mosquitto.start()
        pty.play([v5_frame(i) for i in range(40, 60)])
        expected = [voltage(i) for i in range(60)]
        assert wait_for(lambda: first_seen(sub.collect()) == expected, 20), sub.volts
        assert publisher.drain(10)
    finally:
        logger.stop()
        thread.join(5)
        logger.close()
        publisher.close()
        sub.close()
