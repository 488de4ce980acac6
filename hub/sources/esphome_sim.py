"""A simulated ESPHome air-quality node that speaks the native API (plaintext or Noise).

It answers aioesphomeapi's real `APIClient` the way firmware does, with aioesphomeapi's own
protobuf messages (`api_pb2`, numbered by `core.MESSAGE_TYPE_TO_PROTO`):

* framing: plaintext `0x00 + varuint(len) + varuint(type) + data`; Noise
  (`Noise_NNpsk0_25519_ChaChaPoly_SHA256`, prologue `b"NoiseAPIInit\\x00\\x00"`, this side is
  the responder) frames are `0x01 + u16be(len) + payload`, data frames encrypt
  `u16be(type) + u16be(len) + data`;
* a wrong Noise key is refused with the frame `0x01 "Handshake MAC failure"` as firmware does,
  which aioesphomeapi turns into `InvalidEncryptionKeyAPIError`; a plaintext client talking to
  an encrypted node gets the explicit reject "Bad indicator byte" (-> RequiresEncryptionAPIError)
  and a Noise client talking to a plaintext node gets `0x00 "Bad indicator byte"`;
* messages: hello, device info, list entities (sensors, a binary sensor, a text sensor),
  subscribe states (every state at once, then sensors at `rate` Hz and binary/text sensors
  when they change), ping, disconnect; anything else is ignored, as firmware ignores requests
  for features it does not have.

Values come from `AirQualityModel`, a pure random walk (seeded) with realistic indoor levels:
PM mean-reverting around a few µg/m³ with cooking spikes, CO2 following occupancy, slow
temperature and humidity drift, a Sensirion-like VOC index around 100.

`SimulatorFleet` runs many devices in one process on consecutive ports (port 0: each device
takes a free port, for tests). `hub simulate --esphome-api` runs it from the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from aioesphomeapi import api_pb2 as _api_pb2
from aioesphomeapi.core import MESSAGE_TYPE_TO_PROTO
from google.protobuf.message import DecodeError, Message
from noise.connection import NoiseConnection

_LOGGER = logging.getLogger(__name__)

NOISE_PROTOCOL_NAME = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
NOISE_PROLOGUE = b"NoiseAPIInit\x00\x00"
MAX_FRAME_SIZE = 65535
# Firmware reads at most 3-byte varuints for the frame length (65535 fits); 4 is a safe cap.
_MAX_VARUINT_BYTES = 4
API_VERSION = (1, 12)  # a version that always sends object_id, like firmware of 2024-2025
ESPHOME_VERSION = "2026.10.0"

# Generated protobuf code has no stubs; its classes are looked up by name.
api_pb2: Any = _api_pb2
_PROTO_TO_TYPE: dict[type[Message], int] = {cls: num for num, cls in MESSAGE_TYPE_TO_PROTO.items()}

EntityKind = Literal["sensor", "binary_sensor", "text_sensor"]


def firmware_object_id(name: str) -> str:
    """ESPHome's object id for an entity name, as the C++ firmware computes it.

    Per UTF-8 byte: space -> `_`, A-Z -> a-z, anything outside [a-z0-9_-] -> `_`; so
    "PM2.5" -> `pm2_5` and "CO₂" -> `co___` (aioesphomeapi's Python helper works per character
    and would give `co_`, which is not what the node publishes over MQTT).
    """
    out = []
    for byte in name.encode():
        char = chr(byte)
        if char == " ":
            out.append("_")
        elif "A" <= char <= "Z":
            out.append(char.lower())
        elif "a" <= char <= "z" or "0" <= char <= "9" or char in "_-":
            out.append(char)
        else:
            out.append("_")
    return "".join(out)


def fnv1_32(text: str) -> int:
    """ESPHome's entity key: 32-bit FNV-1 over the object id (`fnv1_hash` in helpers.cpp)."""
    value = 2166136261
    for byte in text.encode():
        value = (value * 16777619) & 0xFFFFFFFF
        value ^= byte
    return value


@dataclass(frozen=True, slots=True)
class SimEntity:
    """One entity as the node declares it. `signal` names the model value it reports."""

    kind: EntityKind
    name: str
    signal: str
    unit: str = ""
    device_class: str = ""
    state_class: int = 1  # SensorStateClass.MEASUREMENT
    accuracy_decimals: int = 0
    object_id: str = ""
    key: int = 0

    def resolved(self) -> SimEntity:
        """With object_id (ESPHome's C++ rule over the name) and key filled in."""
        object_id = self.object_id or firmware_object_id(self.name)
        return replace(self, object_id=object_id, key=self.key or fnv1_32(object_id))


UG_M3 = "µg/m³"

# What an ESP32 with a PMS5003, an SCD41, an SGP41 and a motion sensor declares.
AIRQ_ENTITIES: tuple[SimEntity, ...] = (
    SimEntity("sensor", "PM2.5", "pm2_5", UG_M3, "pm25", accuracy_decimals=0),
    SimEntity("sensor", "PM10", "pm10", UG_M3, "pm10", accuracy_decimals=0),
    SimEntity("sensor", "CO2", "co2", "ppm", "carbon_dioxide", accuracy_decimals=0),
    SimEntity("sensor", "Temperature", "temperature", "°C", "temperature", accuracy_decimals=1),
    SimEntity("sensor", "Humidity", "humidity", "%", "humidity", accuracy_decimals=1),
    SimEntity("sensor", "VOC Index", "voc_index", "", "", accuracy_decimals=0),
    SimEntity("binary_sensor", "Occupancy", "occupied", device_class="occupancy"),
    SimEntity("text_sensor", "Air Quality", "rating"),
)


@dataclass(slots=True)
class AirQualityModel:
    """Indoor air as a seeded random walk. `step(dt)` is pure apart from its own rng."""

    rng: random.Random = field(default_factory=random.Random)
    pm2_5: float = 6.0
    co2: float = 520.0
    temperature: float = 21.4
    humidity: float = 46.0
    voc_index: float = 100.0
    occupied: bool = False
    spike: float = 0.0  # extra PM2.5 from cooking, decays over ~10 min

    def step(self, dt: float) -> None:
        rng = self.rng
        dt = max(dt, 0.0)

        def revert(value: float, mean: float, tau: float, sigma: float) -> float:
            # Ornstein-Uhlenbeck: pulled to `mean` with time constant `tau`, noise `sigma`.
            pull = 1.0 - math.exp(-dt / tau)
            return value + (mean - value) * pull + rng.gauss(0.0, sigma * math.sqrt(max(dt, 1e-3)))

        if rng.random() < dt / 900.0:
            self.occupied = not self.occupied
        if rng.random() < dt / 3600.0:
            self.spike += rng.uniform(25.0, 80.0)
        self.spike *= math.exp(-dt / 600.0)
        self.pm2_5 = max(0.0, revert(self.pm2_5, 5.0 + (3.0 if self.occupied else 0.0), 300.0, 0.3))
        self.co2 = max(400.0, revert(self.co2, 1050.0 if self.occupied else 460.0, 1200.0, 1.5))
        self.temperature = revert(self.temperature, 22.0 if self.occupied else 21.0, 1800.0, 0.01)
        self.humidity = min(100.0, max(0.0, revert(self.humidity, 45.0, 1800.0, 0.03)))
        self.voc_index = min(
            500.0, max(1.0, revert(self.voc_index, 100.0 + self.spike, 600.0, 0.8))
        )

    def values(self) -> dict[str, float | bool | str]:
        """The signal values as the sensors would report them (their native resolution)."""
        pm2_5 = self.pm2_5 + self.spike
        return {
            "pm2_5": float(round(pm2_5)),
            "pm10": float(round(pm2_5 * 1.35 + 0.5)),
            "pm1": float(round(pm2_5 * 0.7)),
            "co2": float(round(self.co2)),
            "temperature": round(self.temperature, 2),
            "humidity": round(self.humidity, 2),
            "voc_index": float(round(self.voc_index)),
            "occupied": self.occupied,
            "rating": _rating(pm2_5),
        }


def _rating(pm2_5: float) -> str:
    # US EPA 2024 PM2.5 category bounds (µg/m³, 24-h); a text a template sensor would show.
    for bound, text in (
        (9.0, "Good"),
        (35.4, "Moderate"),
        (55.4, "Unhealthy for Sensitive Groups"),
    ):
        if pm2_5 <= bound:
            return text
    return "Unhealthy"


# --- framing -------------------------------------------------------------------------------


def encode_varuint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def plaintext_frame(msg_type: int, data: bytes) -> bytes:
    return b"\x00" + encode_varuint(len(data)) + encode_varuint(msg_type) + data


def noise_frame(payload: bytes) -> bytes:
    return bytes((0x01, len(payload) >> 8, len(payload) & 0xFF)) + payload


class FrameError(Exception):
    """The client sent something no firmware would accept; the connection is closed."""


async def _read_varuint(reader: asyncio.StreamReader) -> int:
    result = 0
    for shift in range(0, 7 * _MAX_VARUINT_BYTES, 7):
        byte = (await reader.readexactly(1))[0]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result
    raise FrameError("varuint longer than 4 bytes")


class _Session:
    """One client connection's framing: read (type, data) messages, write messages."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def handshake(self, name: str, mac: str) -> bool:
        return True

    async def read_message(self) -> tuple[int, bytes]:
        raise NotImplementedError

    def write_messages(self, messages: Iterable[Message]) -> None:
        raise NotImplementedError


class _PlaintextSession(_Session):
    async def read_message(self) -> tuple[int, bytes]:
        indicator = (await self.reader.readexactly(1))[0]
        if indicator != 0x00:
            # Firmware tells a Noise client it speaks plaintext, then hangs up.
            self.writer.write(b"\x00Bad indicator byte")
            raise FrameError(f"bad indicator byte {indicator:#04x} (client uses encryption?)")
        length = await _read_varuint(self.reader)
        msg_type = await _read_varuint(self.reader)
        if length > MAX_FRAME_SIZE:
            raise FrameError(f"frame of {length} bytes exceeds {MAX_FRAME_SIZE}")
        return msg_type, await self.reader.readexactly(length)

    def write_messages(self, messages: Iterable[Message]) -> None:
        self.writer.write(
            b"".join(
                plaintext_frame(_PROTO_TO_TYPE[type(m)], m.SerializeToString()) for m in messages
            )
        )


class _NoiseSession(_Session):
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, psk: bytes
    ) -> None:
        super().__init__(reader, writer)
        self.noise = NoiseConnection.from_name(NOISE_PROTOCOL_NAME)
        self.noise.set_as_responder()
        self.noise.set_psks(psk)
        self.noise.set_prologue(NOISE_PROLOGUE)
        self.noise.start_handshake()

    async def _read_frame(self) -> bytes:
        header = await self.reader.readexactly(3)
        if header[0] != 0x01:
            self._reject("Bad indicator byte")
            raise FrameError(f"bad indicator byte {header[0]:#04x} (client uses plaintext?)")
        return await self.reader.readexactly((header[1] << 8) | header[2])

    def _reject(self, reason: str) -> None:
        # Firmware's send_explicit_handshake_reject_: a frame whose first byte is non-zero.
        self.writer.write(noise_frame(b"\x01" + reason.encode()))

    async def handshake(self, name: str, mac: str) -> bool:
        await self._read_frame()  # ClientHello: empty today, reserved for protocol choice
        # Firmware sends the MAC here as 12 lower-case hex digits (expected_mac's format).
        hello_mac = mac.replace(":", "").lower().encode()
        self.writer.write(noise_frame(b"\x01" + name.encode() + b"\x00" + hello_mac + b"\x00"))
        message = await self._read_frame()
        if not message or message[0] != 0x00:
            self._reject("Bad handshake packet")
            return False
        try:
            self.noise.read_message(message[1:])
        except Exception:  # any failure here means the PSKs differ
            self._reject("Handshake MAC failure")
            return False
        self.writer.write(noise_frame(b"\x00" + self.noise.write_message()))
        return True

    async def read_message(self) -> tuple[int, bytes]:
        frame = await self._read_frame()
        try:
            plain = self.noise.decrypt(frame)
        except Exception as exc:
            raise FrameError(f"cannot decrypt a frame: {exc!r}") from None
        if len(plain) < 4:
            raise FrameError(f"decrypted frame of {len(plain)} bytes is too short")
        msg_type, length = struct.unpack_from(">HH", plain)
        if length != len(plain) - 4:
            raise FrameError(f"frame says {length} bytes of data, carries {len(plain) - 4}")
        return msg_type, plain[4:]

    def write_messages(self, messages: Iterable[Message]) -> None:
        frames = []
        for m in messages:
            data = m.SerializeToString()
            payload = self.noise.encrypt(
                struct.pack(">HH", _PROTO_TO_TYPE[type(m)], len(data)) + data
            )
            frames.append(noise_frame(payload))
        self.writer.write(b"".join(frames))


# --- the device ----------------------------------------------------------------------------


def _entity_message(entity: SimEntity) -> Message:
    if entity.kind == "sensor":
        return api_pb2.ListEntitiesSensorResponse(
            object_id=entity.object_id,
            key=entity.key,
            name=entity.name,
            unit_of_measurement=entity.unit,
            accuracy_decimals=entity.accuracy_decimals,
            device_class=entity.device_class,
            state_class=entity.state_class,
        )
    if entity.kind == "binary_sensor":
        return api_pb2.ListEntitiesBinarySensorResponse(
            object_id=entity.object_id,
            key=entity.key,
            name=entity.name,
            device_class=entity.device_class,
        )
    return api_pb2.ListEntitiesTextSensorResponse(
        object_id=entity.object_id,
        key=entity.key,
        name=entity.name,
        device_class=entity.device_class,
    )


def _state_message(entity: SimEntity, value: float | bool | str) -> Message:
    if entity.kind == "sensor":
        return api_pb2.SensorStateResponse(key=entity.key, state=float(value))
    if entity.kind == "binary_sensor":
        return api_pb2.BinarySensorStateResponse(key=entity.key, state=bool(value))
    return api_pb2.TextSensorStateResponse(key=entity.key, state=str(value))


class SimulatedDevice:
    """One node: a TCP server on `host:port` with its entities and its air model.

    `port=0` takes a free port; after `start()` `port` is the bound one, so `stop()` and
    `start()` again bring the device back on the same port (a reboot, seen from the hub).
    """

    def __init__(
        self,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 6053,
        noise_psk: bytes | None = None,
        rate: float = 1.0,
        entities: Sequence[SimEntity] = AIRQ_ENTITIES,
        seed: int | None = None,
        mac: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if noise_psk is not None and len(noise_psk) != 32:
            raise ValueError("the Noise key must be 32 bytes")
        if rate <= 0:
            raise ValueError("rate must be > 0 states per second")
        self.name = name
        self.host = host
        self.port = port
        self.noise_psk = noise_psk
        self.rate = rate
        self.entities = tuple(e.resolved() for e in entities)
        self.mac = mac or ":".join(
            f"{b:02X}" for b in b"\x02\x00\x00" + fnv1_32(name).to_bytes(4, "big")[1:]
        )
        self.model = AirQualityModel(random.Random(seed if seed is not None else fnv1_32(name)))
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._subscribers: set[_Session] = set()
        self._last: dict[int, float | bool | str] = {}
        self.connections_total = 0
        self.handshake_failures = 0
        self.requests: Counter[str] = Counter()  # by message name, for status and tests

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ticker = asyncio.create_task(self._tick(), name=f"esphome-sim {self.name} ticker")
        _LOGGER.info("simulated ESPHome node %s on %s:%d (%s)", self.name, self.host, self.port,
                     "noise" if self.noise_psk else "plaintext")  # fmt: skip

    async def stop(self) -> None:
        """Power off: close the listener and drop every connection without a goodbye."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = [t for t in (self._ticker, *self._connections) if t is not None]
        self._ticker = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        self._subscribers.clear()

    async def __aenter__(self) -> SimulatedDevice:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # the air model drives every subscriber at `rate`
    async def _tick(self) -> None:
        interval = 1.0 / self.rate
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            self.model.step(now - last)
            last = now
            messages = self._changed_states()
            for session in list(self._subscribers):
                self._send(session, messages)

    def _changed_states(self) -> list[Message]:
        values = self.model.values()
        out = []
        for entity in self.entities:
            value = values.get(entity.signal)
            if value is None:
                continue
            # Sensors report every update interval; binary and text sensors on change.
            if entity.kind == "sensor" or self._last.get(entity.key) != value:
                out.append(_state_message(entity, value))
            self._last[entity.key] = value
        return out

    def _all_states(self) -> list[Message]:
        values = self.model.values()
        return [_state_message(e, values[e.signal]) for e in self.entities if e.signal in values]

    def _send(self, session: _Session, messages: Sequence[Message]) -> None:
        if not messages or session.writer.is_closing():
            return
        try:
            session.write_messages(messages)
        except (ConnectionError, RuntimeError) as exc:
            _LOGGER.debug("%s: dropping a subscriber: %s", self.name, exc)
            self._subscribers.discard(session)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.connections_total += 1
        session: _Session = (
            _NoiseSession(reader, writer, self.noise_psk)
            if self.noise_psk
            else _PlaintextSession(reader, writer)
        )
        peer = writer.get_extra_info("peername")
        try:
            if not await session.handshake(self.name, self.mac):
                self.handshake_failures += 1
                _LOGGER.info("%s: handshake with %s failed (wrong key?)", self.name, peer)
                await writer.drain()
                return
            while True:
                msg_type, data = await session.read_message()
                if not self._handle(session, msg_type, data):
                    await writer.drain()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        except FrameError as exc:
            _LOGGER.info("%s: closing the connection from %s: %s", self.name, peer, exc)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            self._subscribers.discard(session)
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    def _handle(self, session: _Session, msg_type: int, data: bytes) -> bool:
        """Answer one request; False ends the connection."""
        cls = MESSAGE_TYPE_TO_PROTO.get(msg_type)
        if cls is None:
            _LOGGER.debug("%s: ignoring unknown message type %d", self.name, msg_type)
            return True
        request = cls()
        try:
            request.ParseFromString(data)
        except DecodeError as exc:
            raise FrameError(f"bad {cls.__name__}: {exc}") from None
        self.requests[cls.__name__] += 1
        if isinstance(request, api_pb2.HelloRequest):
            session.write_messages([api_pb2.HelloResponse(
                api_version_major=API_VERSION[0], api_version_minor=API_VERSION[1],
                server_info=f"{self.name} (esphome v{ESPHOME_VERSION})", name=self.name,
            )])  # fmt: skip
        elif isinstance(request, api_pb2.DeviceInfoRequest):
            session.write_messages([self._device_info()])
        elif isinstance(request, api_pb2.ListEntitiesRequest):
            session.write_messages(
                [*map(_entity_message, self.entities), api_pb2.ListEntitiesDoneResponse()]
            )
        elif isinstance(request, api_pb2.SubscribeStatesRequest):
            self._subscribers.add(session)
            self._send(session, self._all_states())
        elif isinstance(request, api_pb2.PingRequest):
            session.write_messages([api_pb2.PingResponse()])
        elif isinstance(request, api_pb2.DisconnectRequest):
            session.write_messages([api_pb2.DisconnectResponse()])
            return False
        elif isinstance(request, api_pb2.DisconnectResponse):
            return False
        return True

    def _device_info(self) -> Message:
        return api_pb2.DeviceInfoResponse(
            uses_password=False,
            name=self.name,
            friendly_name=self.name.replace("-", " ").title(),
            mac_address=self.mac,
            esphome_version=ESPHOME_VERSION,
            compilation_time="Nov 22 2026, 10:00:00",
            model="esp32-c3-devkitm-1",
            manufacturer="Espressif",
            project_name="hub.airq-sim",
            project_version="1.0",
            api_encryption_supported=self.noise_psk is not None,
        )


class SimulatorFleet:
    """`count` devices named `<prefix>-1..N` on consecutive ports from `port_base`.

    `port_base=0` gives every device a free port (tests); read them from `devices`.
    """

    def __init__(
        self,
        count: int,
        *,
        port_base: int = 6053,
        host: str = "127.0.0.1",
        noise_psk: bytes | None = None,
        rate: float = 1.0,
        prefix: str = "airq-sim",
        entities: Sequence[SimEntity] = AIRQ_ENTITIES,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self.devices = [
            SimulatedDevice(
                f"{prefix}-{i + 1}",
                host=host,
                port=port_base + i if port_base else 0,
                noise_psk=noise_psk,
                rate=rate,
                entities=entities,
            )
            for i in range(count)
        ]

    async def start(self) -> None:
        try:
            for device in self.devices:
                await device.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await asyncio.gather(*(d.stop() for d in self.devices))

    async def __aenter__(self) -> SimulatorFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
