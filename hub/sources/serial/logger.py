"""The serial ESC logger: port -> decoder -> readings -> sink, plus a raw capture.

A reader thread only moves bytes: it reads the port and queues `(receive time, bytes)`. The
`run()` loop feeds them to the framer, writes the capture, converts frames to readings and
hands them to the sink in batches. The sink is injectable (`SpoolingPublisher.submit` in
production, a list in tests), and so is the port (`serial_for_url`, so a pty or `loop://`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import serial

from hub.model import Event, Reading
from hub.sources.serial.capture import CaptureWriter
from hub.sources.serial.detect import DetectResult, detect
from hub.sources.serial.frames import Decoded
from hub.sources.serial.framing import Framer
from hub.sources.serial.protocols import default_baud, make_framer
from hub.sources.serial.readings import ReadingMaker
from hub.sources.serial.settings import EscSettings
from hub.sources.serial.vesc import get_values_request

log = logging.getLogger(__name__)

Sink = Callable[[str, list[Reading], list[Event]], None]


@dataclass(slots=True)
class LoggerCounters:
    chunks: int = 0
    frames: int = 0
    readings: int = 0
    events: int = 0
    polls: int = 0
    read_errors: int = 0
    latest: dict[str, Any] = field(default_factory=dict)  # last SI values, for the live view


class SerialLogger:
    def __init__(
        self,
        port: str,
        device: str,
        sink: Sink,
        protocol: str = "auto",
        baud: int | None = None,
        settings: EscSettings | None = None,
        capture: CaptureWriter | None = None,
        vesc_poll_interval: float = 0.05,
        publish_interval: float = 0.05,
        detect_seconds: float = 1.5,
        clock: Callable[[], float] = time.time,
        on_frame: Callable[[Decoded], None] | None = None,
    ) -> None:
        self.port_name = port
        self.device = device
        self.sink = sink
        self.protocol = protocol
        self.baud = baud
        self.settings = settings or EscSettings()
        self.capture = capture
        self.vesc_poll_interval = vesc_poll_interval
        self.publish_interval = publish_interval
        self.detect_seconds = detect_seconds
        self.clock = clock
        self.on_frame = on_frame
        self.counters = LoggerCounters()
        self.framer: Framer | None = None
        self.detected: DetectResult | None = None
        self.maker = ReadingMaker(device, self.settings)
        self._queue: queue.Queue[tuple[float, bytes]] = queue.Queue(maxsize=10_000)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._port: serial.SerialBase | None = None
        self._reader: threading.Thread | None = None

    # -- port side ---------------------------------------------------------------------------
    def _open(self, baud: int) -> serial.SerialBase:
        return serial.serial_for_url(self.port_name, baudrate=baud, timeout=0.02)

    def _read_loop(self, port: serial.SerialBase) -> None:
        while not self._stop.is_set():
            try:
                data = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError, TypeError) as exc:
                if self._stop.is_set():
                    break
                self.counters.read_errors += 1
                log.warning("reading %s failed: %s", self.port_name, exc)
                time.sleep(0.2)
                continue
            if data:
                self._queue.put((self.clock(), data))

    def _sample(self, baud: int) -> list[tuple[float, bytes]]:
        assert self._port is not None
        self._port.baudrate = baud
        self._port.reset_input_buffer()
        chunks: list[tuple[float, bytes]] = []
        deadline = time.monotonic() + self.detect_seconds
        while time.monotonic() < deadline and not self._stop.is_set():
            data = self._port.read(max(1, self._port.in_waiting))
            if data:
                chunks.append((self.clock(), data))
        return chunks

    def open(self) -> None:
        """Open the port, detect the protocol if asked, start the reader thread."""
        baud = self.baud or (default_baud(self.protocol) if self.protocol != "auto" else 115200)
        self._port = self._open(baud)
        if self.protocol == "auto":
            bauds = (self.baud,) if self.baud else (115200, 19200)
            self.detected = detect(self._sample, bauds, self.settings)
            log.info("auto-detect on %s: %s", self.port_name, self.detected.describe())
            if self.detected.protocol is None:
                raise RuntimeError(
                    f"no ESC telemetry recognised on {self.port_name}\n{self.detected.describe()}"
                )
            self.protocol = self.detected.protocol
            self.baud = self.detected.baud
            self._port.baudrate = self.baud or baud
        else:
            self.baud = baud
        self.framer = make_framer(self.protocol, self.settings)
        if self.framer is None:
            raise ValueError(f"unknown protocol {self.protocol!r}")
        if self.capture is not None:
            self.capture.protocol = self.protocol
            self.capture.baud = self.baud or baud
        self._reader = threading.Thread(
            target=self._read_loop, args=(self._port,), name="serial-reader", daemon=True
        )
        self._reader.start()
        self._ready.set()

    # -- decode side -------------------------------------------------------------------------
    def process(self, t: float, data: bytes) -> tuple[list[Reading], list[Event]]:
        assert self.framer is not None
        self.counters.chunks += bool(data)
        if self.capture is not None and data:
            self.capture.write(t, data)
        readings: list[Reading] = []
        events: list[Event] = []
        for decoded in self.framer.feed(data, t):
            self.counters.frames += 1
            r, e = self.maker.convert(decoded)
            readings += r
            events += e
            self.counters.latest.update(
                {
                    k: v
                    for k, v in decoded.frame.si(self.settings).items()
                    if isinstance(v, int | float | str)
                }
            )
            self.counters.latest["t"] = decoded.t
            if self.on_frame is not None:
                self.on_frame(decoded)
        return readings, events

    def run(self, duration: float | None = None) -> None:
        """Decode until `stop()` (or `duration` seconds); opens the port if needed."""
        if not self._ready.is_set():
            self.open()
        end = None if duration is None else time.monotonic() + duration
        pending_r: list[Reading] = []
        pending_e: list[Event] = []
        last_flush = last_poll = time.monotonic()
        try:
            while not self._stop.is_set() and (end is None or time.monotonic() < end):
                try:
                    t, data = self._queue.get(timeout=0.02)
                except queue.Empty:
                    t, data = self.clock(), b""
                r, e = self.process(t, data)
                pending_r += r
                pending_e += e
                now = time.monotonic()
                if self.protocol == "vesc" and now - last_poll >= self.vesc_poll_interval:
                    last_poll = now
                    self._poll()
                if (pending_r or pending_e) and now - last_flush >= self.publish_interval:
                    self._flush(pending_r, pending_e)
                    pending_r, pending_e = [], []
                    last_flush = now
        finally:
            while not self._queue.empty():
                r, e = self.process(*self._queue.get_nowait())
                pending_r += r
                pending_e += e
            self._flush(pending_r, pending_e)

    def _poll(self) -> None:
        try:
            assert self._port is not None
            self._port.write(get_values_request())
            self.counters.polls += 1
        except (serial.SerialException, OSError) as exc:
            log.warning("VESC poll on %s failed: %s", self.port_name, exc)

    def _flush(self, readings: list[Reading], events: list[Event]) -> None:
        if readings or events:
            self.counters.readings += len(readings)
            self.counters.events += len(events)
            self.sink(self.device, readings, events)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(2)
        if self._port is not None:
            self._port.close()
        if self.capture is not None:
            self.capture.close()
