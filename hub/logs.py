"""Logging set-up for `hub run`: human lines by default, JSON lines on request."""

from __future__ import annotations

import logging
import re
import sys
import time

import orjson

from hub.config import LogConfig


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


# A token in a URL (the live feed's ?token=, which uvicorn's access log and websockets' DEBUG
# lines print with the path), in an Authorization value, or a cookie, as libraries log them.
_SECRETS = re.compile(
    r"(?P<key>(?:[?&](?:access_)?token|[?&]password)=)[^&\s\"']+"
    r"|(?P<scheme>\b(?:Bearer|Basic|(?-i:Token))\s+)[A-Za-z0-9._~+/=-]{8,}"
    # A header line as websockets logs it at DEBUG ("< cookie: session=...").
    r"|(?P<header>\b(?:cookie|set-cookie|authorization|proxy-authorization):[ \t]*)[^\r\n]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    return _SECRETS.sub(
        lambda m: (m.group("key") or m.group("scheme") or m.group("header")) + "***", text
    )


class RedactSecrets(logging.Filter):
    """Masks tokens in URLs and Authorization values, whoever logs them (uvicorn, websockets)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(config: LogConfig, json_lines: bool | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines if json_lines is not None else config.json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    # paho logs every packet at DEBUG and every failed reconnect at ERROR; the hub reports
    # connection state itself (once per outage), so paho speaks only when asked for by name.
    logging.getLogger("hub.bus.paho").setLevel(logging.CRITICAL)
    for name, level in config.levels.items():
        logging.getLogger(name).setLevel(level.upper())
