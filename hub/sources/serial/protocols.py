"""The protocol registry: name -> framer class, default baud rate, and a factory."""

from __future__ import annotations

from hub.sources.serial.bridge_lines import BridgeLineFramer
from hub.sources.serial.framing import Framer
from hub.sources.serial.hobbywing import (
    HobbywingFocFramer,
    HobbywingV3Framer,
    HobbywingV4Framer,
    HobbywingV5Framer,
)
from hub.sources.serial.kiss import KissFramer
from hub.sources.serial.settings import EscSettings
from hub.sources.serial.vesc import VescFramer

FRAMERS: dict[str, type[Framer]] = {
    cls.protocol: cls
    for cls in (
        KissFramer,
        HobbywingV3Framer,
        HobbywingV4Framer,
        HobbywingFocFramer,
        HobbywingV5Framer,
        VescFramer,
        BridgeLineFramer,
    )
}


def make_framer(protocol: str, settings: EscSettings | None = None) -> Framer | None:
    """A fresh framer for `protocol` with the settings' timeouts and limits; None if unknown."""
    cls = FRAMERS.get(protocol)
    if cls is None:
        return None
    settings = settings or EscSettings()
    timeout = settings.inter_byte_timeout if settings.inter_byte_timeout is not None else -1.0
    if cls is KissFramer:
        return KissFramer(
            timeout,
            settings.kiss_max_voltage,
            settings.kiss_min_temperature,
            settings.kiss_min_voltage,
        )
    return cls(timeout)


def default_baud(protocol: str) -> int:
    cls = FRAMERS.get(protocol)
    return cls.default_baud if cls else 115200
