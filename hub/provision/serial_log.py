"""Follow a freshly flashed node's serial log until it is on the network.

ESPHome's logger writes lines like these to the UART (colour codes around them, and the
`esphome logs` command adds a `[12:34:56]` time in front):

    [I][app:100]: ESPHome version 2024.6.1 compiled on Jun 20 2024, 10:00:00
    [C][wifi:427]:   IP Address: 192.168.1.42
    [I][wifi:617]: WiFi Connected!
    [I][mqtt:274]: MQTT Connected!
    [I][api.connection:1446]: Home Assistant 2024.6.0 (192.168.1.10): Connected successfully

i.e. `[level][tag:line]: message`, level one of E W I C D V VV. The exact wording of the
"connected" messages has changed across ESPHome releases, so the watch keys on the component tag
(`wifi`, `mqtt`, `api…`) and the word "connected" rather than on whole sentences.

`parse_line` and `ConnectionWatch` are pure; `follow_log` is the serial edge. Lines can carry
secrets (a mistyped `!secret`, a URL with a password), so every known secret is masked before a
line is logged, shown or kept.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import serial

__all__ = [
    "ConnectionWatch",
    "FollowResult",
    "LogLine",
    "LogTimeoutError",
    "follow_log",
    "parse_line",
    "redact",
]

logger = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LINE = re.compile(
    r"^(?:\[\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?\])?"  # the time `esphome logs` prepends
    r"\[(?P<level>VV|[EWICDV])\]"
    r"\[(?P<tag>[A-Za-z0-9_.\-]+)(?::(?P<line>\d+))?\]"
    r"(?:\[[^\]]*\])?"  # newer releases may add a [task] field
    r":\s?(?P<message>.*)$"
)
_CONNECTED = re.compile(r"\bconnected\b", re.IGNORECASE)
_NOT_CONNECTED = re.compile(
    r"\bdisconnected\b|\bnot connected\b|\bunconnected\b|connection failed|failed",
    re.IGNORECASE,
)
_IP = re.compile(r"IP Address:\s*(?P<ip>\d{1,3}(?:\.\d{1,3}){3})")
MASK = "••••••"


@dataclass(frozen=True)
class LogLine:
    level: str
    tag: str
    message: str


def parse_line(text: str) -> LogLine | None:
    """One ESPHome log line (colour codes and a leading time allowed), or None for other text."""
    clean = _ANSI.sub("", text).strip()
    match = _LINE.match(clean)
    if match is None:
        return None
    return LogLine(match["level"], match["tag"], match["message"].strip())


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


@dataclass
class ConnectionWatch:
    """Tracks the milestones: Wi-Fi up, then MQTT or the native API connected."""

    wifi: bool = False
    mqtt: bool = False
    api: bool = False
    ip: str | None = None
    errors: list[str] = field(default_factory=list)

    def feed(self, line: LogLine) -> list[str]:
        """Milestones this line reached ('wifi', 'mqtt', 'api'), in order."""
        reached: list[str] = []
        tag = line.tag.lower()
        if line.level == "E":
            self.errors.append(f"[{line.tag}] {line.message}")
        ip = _IP.search(line.message)
        if ip and tag.startswith("wifi"):
            self.ip = ip["ip"]
        connected = bool(_CONNECTED.search(line.message)) and not _NOT_CONNECTED.search(
            line.message
        )
        if not connected:
            return reached
        if tag.startswith("wifi") and not self.wifi:
            self.wifi = True
            reached.append("wifi")
        elif tag.startswith("mqtt") and not self.mqtt:
            self.mqtt = True
            reached.append("mqtt")
        elif tag.startswith("api") and not self.api:
            self.api = True
            reached.append("api")
        return reached

    @property
    def done(self) -> bool:
        return self.wifi and (self.mqtt or self.api)

    def missing(self) -> str:
        if not self.wifi:
            return "Wi-Fi never connected"
        return "Wi-Fi connected, but neither MQTT nor the API did"


@dataclass(frozen=True)
class FollowResult:
    wifi: bool
    mqtt: bool
    api: bool
    ip: str | None
    lines: int
    seconds: float


class LogTimeoutError(Exception):
    def __init__(self, message: str, last_lines: list[str]) -> None:
        super().__init__(message)
        self.last_lines = last_lines


def follow_log(
    port: str,
    *,
    baud: int = 115200,
    timeout: float = 60.0,
    secrets: Sequence[str] = (),
    on_line: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FollowResult:
    """Read the node's log on `port` until Wi-Fi and MQTT or API are connected.

    Raises `LogTimeoutError` (with the last lines, secrets masked) after `timeout` seconds, and
    `serial.SerialException` if the port cannot be opened.
    """
    watch = ConnectionWatch()
    last: list[str] = []
    count = 0
    pending = b""
    link = serial.serial_for_url(port, do_not_open=True, baudrate=baud, timeout=0.1)
    link.dtr = False  # opening must not reset (or hold in reset) an auto-reset board
    link.rts = False
    link.open()
    start = clock()
    with link:
        while clock() - start < timeout:
            pending += link.read(4096)
            *complete, pending = pending.split(b"\n")
            if len(pending) > 4096:  # a "line" this long is noise (wrong baud); drop it
                pending = b""
            for raw in complete:
                text = redact(raw.decode("utf-8", "replace").rstrip("\r"), secrets)
                if not text.strip():
                    continue
                count += 1
                last = [*last[-19:], text]
                logger.debug("%s: %s", port, text)
                if on_line is not None:
                    on_line(text)
                parsed = parse_line(text)
                if parsed is None:
                    continue
                for milestone in watch.feed(parsed):
                    logger.info("Node on %s: %s connected", port, milestone)
                if watch.done:
                    return FollowResult(
                        watch.wifi, watch.mqtt, watch.api, watch.ip, count, clock() - start
                    )
    raise LogTimeoutError(
        f"No connection reported on {port} within {timeout:.0f} s: {watch.missing()}"
        + (f" (last error: {watch.errors[-1]})" if watch.errors else ""),
        last,
    )
