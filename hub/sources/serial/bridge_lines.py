"""The ESP32/Arduino bridge line protocol (spec §5): JSON Lines or CSV, one frame per line.

    {"v":1,"t_us":123456789,"src":"esc0","proto":"kiss","raw":"2306 9004 D202 3701 0076"}
    {"v":1,"t_us":123457001,"src":"esc0","proto":"kiss","dec":{"temp_c":35,"volt_v":16.8}}
    {"v":1,"t_us":123470000,"src":"bridge","evt":"crc_error","proto":"hw5","count":3}
    # hubcap v1            <- CSV: '#' lines are headers/comments
    123456789,esc0,kiss,23069004D20237010076[*XX]   <- optional NMEA-style XOR checksum

`raw` bytes go to the decoder of their protocol (one framer per `src`/`proto`), so the hub's
decoders stay the single source of truth. `t_us` is the bridge's monotonic clock; it is mapped
to the receive clock by an offset taken at the first line and re-taken if they drift apart by
more than a second (bridge reboot).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from hub.sources.serial.frames import BridgeEvent, BridgeValues, Decoded
from hub.sources.serial.framing import Framer

MAX_LINE = 4096
# Names bridges use for a protocol -> the hub's protocol names.
PROTO_ALIASES = {
    "kiss": "kiss",
    "blheli32": "kiss",
    "am32": "kiss",
    "hw3": "hobbywing-v3",
    "hw4": "hobbywing-v4",
    "hwfoc": "hobbywing-foc",
    "hw-foc": "hobbywing-foc",
    "hw5": "hobbywing-v5",
    "vesc": "vesc",
}


def _default_factory(protocol: str) -> Framer | None:
    from hub.sources.serial.protocols import make_framer

    return make_framer(protocol)


def nmea_checksum(text: str) -> int:
    value = 0
    for ch in text.encode():
        value ^= ch
    return value


class BridgeLineFramer(Framer):
    protocol = "bridge"
    default_baud = 115200
    default_timeout = None
    max_frame = MAX_LINE

    def __init__(
        self,
        timeout: float | None = -1.0,
        make_framer: Callable[[str], Framer | None] = _default_factory,
    ) -> None:
        super().__init__(timeout)
        self._make = make_framer
        self.framers: dict[tuple[str, str], Framer] = {}
        self._offset: float | None = None
        self._discarding = False

    def _scan(self, out: list[Decoded], t: float, final: bool) -> None:
        buf = self._buf
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if self._discarding:
                self._discarding = False
                self._skip(nl + 1 - start)
            else:
                self._line(bytes(buf[start:nl]).strip(), t, out)
            start = nl + 1
        if len(buf) - start > MAX_LINE:
            self.stats.bad["line_too_long"] += 1
            self._skip(len(buf) - start)
            self._discarding = True
            start = len(buf)
        elif final and start < len(buf):
            self._line(bytes(buf[start:]).strip(), t, out)
            start = len(buf)
        del buf[:start]
        if final:
            for framer in self.framers.values():
                out.extend(self._tag(framer.flush(), framer))

    def _tag(self, decoded: list[Decoded], framer: Framer) -> list[Decoded]:
        src = next((k[0] for k, f in self.framers.items() if f is framer), "")
        return [dataclasses.replace(d, src=src) for d in decoded]

    def _bad(self, reason: str, count_bytes: int) -> None:
        self.stats.bad[reason] += 1
        self._skip(count_bytes)

    def _time(self, t_us: Any, t: float) -> float:
        if isinstance(t_us, bool) or not isinstance(t_us, int):
            return t
        bridge_s = t_us / 1e6
        if self._offset is None or abs(bridge_s + self._offset - t) > 1.0:
            self._offset = t - bridge_s
        return bridge_s + self._offset

    def _line(self, line: bytes, t: float, out: list[Decoded]) -> None:
        if not line:
            return
        if line[:1] == b"#":
            return
        if line[:1] == b"{":
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                self._bad("invalid_json", len(line) + 1)
                return
            if not isinstance(obj, dict):
                self._bad("not_an_object", len(line) + 1)
                return
            self._object(obj, t, out, len(line) + 1)
            return
        self._csv(line, t, out)

    def _object(self, obj: dict[str, Any], t: float, out: list[Decoded], size: int) -> None:
        if obj.get("v", 1) != 1:
            self._bad("unsupported_version", size)
            return
        when = self._time(obj.get("t_us"), t)
        src = obj.get("src", "")
        proto = obj.get("proto")
        if not isinstance(src, str) or (proto is not None and not isinstance(proto, str)):
            self._bad("not_an_object", size)
            return
        if "raw" in obj:
            raw = obj["raw"]
            if not isinstance(raw, str) or proto is None:
                self._bad("missing_field", size)
                return
            self._raw(src, proto, raw, when, out, size)
        elif "dec" in obj:
            dec = obj["dec"]
            if not isinstance(dec, dict):
                self._bad("not_an_object", size)
                return
            self._emit(out, Decoded("bridge", when, BridgeValues(src, proto, dec), size, src=src))
        elif "evt" in obj or "hello" in obj:
            name = obj.get("evt", "hello")
            detail = {k: v for k, v in obj.items() if k not in ("v", "t_us", "src", "evt")}
            self._emit(
                out, Decoded("bridge", when, BridgeEvent(src, str(name), detail), size, src=src)
            )
        else:
            self._bad("missing_field", size)

    def _csv(self, line: bytes, t: float, out: list[Decoded]) -> None:
        size = len(line) + 1
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            self._bad("invalid_utf8", size)
            return
        if "*" in text:
            text, _, check = text.rpartition("*")
            try:
                ok = int(check, 16) == nmea_checksum(text)
            except ValueError:
                ok = False
            if not ok:
                self._bad("checksum", size)
                return
        parts = text.split(",")
        if len(parts) != 4:
            self._bad("bad_csv", size)
            return
        t_us, src, proto, raw = parts
        try:
            when = self._time(int(t_us), t)
        except ValueError:
            self._bad("bad_csv", size)
            return
        self._raw(src, proto, raw, when, out, size)

    def _raw(
        self, src: str, proto: str, raw: str, when: float, out: list[Decoded], size: int
    ) -> None:
        try:
            data = bytes.fromhex(raw)
        except ValueError:
            self._bad("bad_hex", size)
            return
        name = PROTO_ALIASES.get(proto.lower(), proto.lower())
        key = (src, name)
        framer = self.framers.get(key)
        if framer is None:
            framer = self._make(name) if name != "bridge" else None
            if framer is None:
                self._bad("unknown_protocol", size)
                return
            self.framers[key] = framer
        for decoded in framer.feed(data, when):
            self._emit(out, dataclasses.replace(decoded, src=src))
