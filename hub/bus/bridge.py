"""The RC bridge firmware's raw ESC frames on `<prefix>/bridge/<node>` (stateful codec).

Each payload is one or more lines of the bridge line protocol (spec §5); `raw` bytes go
through the same serial decoders as a USB adapter on the bench, so a frame decodes the same
wherever it was read. One framer per node keeps partial state between messages. Timestamps
come from the bridge's own clock (`t_us`), mapped onto the receive clock.
"""

from __future__ import annotations

from hub.bus import reject
from hub.bus.hub_json import check_device
from hub.bus.reject import Rejected
from hub.model import Event, Reading
from hub.sources.serial.bridge_lines import BridgeLineFramer
from hub.sources.serial.readings import ReadingMaker
from hub.sources.serial.settings import EscSettings

MAX_NODES = 256


class BridgeCodec:
    def __init__(self, settings: EscSettings | None = None) -> None:
        self.settings = settings or EscSettings()
        self._nodes: dict[str, tuple[BridgeLineFramer, ReadingMaker]] = {}

    def decode(
        self, node: str, payload: bytes, received_ms: int
    ) -> tuple[list[Reading], list[Event]]:
        check_device(node)
        state = self._nodes.get(node)
        if state is None:
            if len(self._nodes) >= MAX_NODES:
                raise Rejected(
                    reject.BAD_NAME, f"more than {MAX_NODES} bridge nodes; {node!r} ignored"
                )
            state = self._nodes[node] = (
                BridgeLineFramer(timeout=None),
                ReadingMaker(node, self.settings),
            )
        framer, maker = state
        bad_before = sum(framer.stats.bad.values())
        data = payload if payload.endswith(b"\n") else payload + b"\n"
        readings: list[Reading] = []
        events: list[Event] = []
        for decoded in framer.feed(data, received_ms / 1000):
            r, e = maker.convert(decoded)
            readings.extend(r)
            events.extend(e)
        bad = sum(framer.stats.bad.values()) - bad_before
        if bad and not readings and not events:
            reasons = ", ".join(f"{k}: {v}" for k, v in framer.stats.bad.items() if v)
            raise Rejected(
                reject.BAD_FRAME, f"no valid frame in this bridge message ({reasons} so far)"
            )
        return readings, events
