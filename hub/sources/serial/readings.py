"""Decoded frames -> hub `Reading`s (SI units, catalog names) and fault `Event`s.

Pure and stateful only in what it must remember: the last fault state per ESC, so a fault
becomes one `Event` when it appears and one ("ok") when it clears, not one per frame.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hub.model import CATALOG, Event, Reading
from hub.sources.serial.frames import (
    BridgeEvent,
    Decoded,
    HobbywingFocFrame,
    HobbywingV5Frame,
    VescValues,
    vesc_fault_name,
)
from hub.sources.serial.settings import EscSettings

# SI keys published as readings (catalog names, plus duty_cycle: see the folder README).
PUBLISHED = (
    "pack_voltage",
    "current",
    "esc_temperature",
    "motor_temperature",
    "erpm",
    "rpm",
    "consumed_mah",
    "energy_wh",
    "throttle",
    "duty_cycle",
    "cell_voltage_min",
    "cell_voltage_max",
    "cell_voltage_avg",
)
UNITS = {"duty_cycle": "%"}
_NAME_RE = re.compile(r"[^a-z0-9_]+")


def fault_text(decoded: Decoded) -> str | None:
    """The frame's fault state as text ("ok" when clear); None if the protocol has none."""
    frame = decoded.frame
    if isinstance(frame, HobbywingV5Frame):
        return ", ".join(frame.faults) or "ok"
    if isinstance(frame, HobbywingFocFrame):
        return f"status 0x{frame.status:04x}" if frame.status else "ok"
    if isinstance(frame, VescValues) and "fault_code" in frame.values:
        name = vesc_fault_name(int(frame.values["fault_code"]))
        return "ok" if name == "NONE" else name
    return None


class ReadingMaker:
    def __init__(
        self,
        device: str,
        settings: EscSettings | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.device = device
        self.settings = settings or EscSettings()
        self.tags = dict(tags or {})
        self._faults: dict[str, str] = {}

    def convert(self, decoded: Decoded) -> tuple[list[Reading], list[Event]]:
        ts_ms = round(decoded.t * 1000)
        tags = {**self.tags, "esc": decoded.src} if decoded.src else self.tags
        si = decoded.frame.si(self.settings)
        readings = []
        for key in PUBLISHED:
            value = si.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                spec = CATALOG.get(key)
                unit = spec.unit if spec else UNITS.get(key)
                readings.append(
                    Reading(self.device, key, float(value), ts_ms, unit, tags, "serial")
                )
        events = []
        if isinstance(decoded.frame, BridgeEvent):
            name = _NAME_RE.sub("_", f"bridge_{decoded.frame.name}".lower())[:64]
            detail = ", ".join(f"{k}={v}" for k, v in decoded.frame.detail.items())
            events.append(Event(self.device, name, detail or decoded.frame.name, ts_ms, "serial"))
        text = fault_text(decoded)
        if text is not None:
            previous = self._faults.get(decoded.src)
            if text != previous and (previous is not None or text != "ok"):
                events.append(Event(self.device, "esc_fault", text, ts_ms, "serial"))
            self._faults[decoded.src] = text
        return readings, events


def frame_json(decoded: Decoded, settings: EscSettings) -> dict[str, object]:
    """One JSON-ready object per frame: protocol, receive time, every field in SI units."""
    obj: dict[str, object] = {"protocol": decoded.protocol, "t": round(decoded.t, 6)}
    if decoded.src:
        obj["src"] = decoded.src
    obj["type"] = type(decoded.frame).__name__
    obj["verified"] = decoded.verified
    for key, value in decoded.frame.si(settings).items():
        obj[key] = round(value, 6) if isinstance(value, float) else value
    return obj
