"""Home Assistant add-on entry point: the add-on's options and MQTT service -> hub.yaml -> run.

The Supervisor writes the user's options (validated against config.yaml's `schema`) to
/data/options.json and, because config.yaml declares `services: [mqtt:need]`, answers
GET http://supervisor/services/mqtt with the Mosquitto add-on's host, port and a login made
for this add-on. `options_to_config` is the whole mapping (pure, tested against the real
config schema); `main` fetches, writes /data/hub.yaml (0600: it holds passwords) and starts
`hub run` (and the bench logger when a serial port is chosen) in its place.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

DATA = Path("/data")
SUPERVISOR = "http://supervisor"


def options_to_config(options: dict[str, Any], mqtt: dict[str, Any] | None) -> dict[str, Any]:
    """hub.yaml for the add-on's options and the MQTT service (None: no broker found)."""
    config: dict[str, Any] = {
        "data_dir": str(DATA),
        "log": {"level": options.get("log_level", "info")},
        # Ingress reaches the dashboard on this port from the Supervisor's proxy only.
        "web": {
            "host": "0.0.0.0",
            "port": 8090,
            "public_read": bool(options.get("web_public_read", False)),
        },
        "store": {
            "retention": {"raw": f"{int(options.get('retention_raw_days', 30))}d"},
        },
        "homeassistant": {"discovery": {"enabled": bool(options.get("ha_discovery", True))}},
    }
    if mqtt:
        scheme = "mqtts" if mqtt.get("ssl") else "mqtt"
        config["broker"] = {
            "url": f"{scheme}://{mqtt['host']}:{int(mqtt['port'])}",
            "username": mqtt.get("username"),
            "password": mqtt.get("password"),
            "client_id": "hub-addon",
        }
    if options.get("influx_enabled"):
        config["influx"] = {
            "enabled": True,
            "url": options.get("influx_url", ""),
            "org": options.get("influx_org", ""),
            "bucket": options.get("influx_bucket", "hub"),
            "token": options.get("influx_token") or None,
        }
    if options.get("serial_port"):
        config["serial"] = {
            "port": options["serial_port"],
            "vehicle": options.get("serial_vehicle", "buggy"),
        }
    return config


def _mqtt_service(token: str) -> dict[str, Any] | None:
    request = urllib.request.Request(
        f"{SUPERVISOR}/services/mqtt", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
    except (OSError, ValueError) as exc:
        log.error("No MQTT service from the Supervisor (%s): install the Mosquitto add-on", exc)
        return None
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, dict) and data.get("host") else None


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = json.loads((DATA / "options.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.error("Cannot read the add-on options %s: %s", DATA / "options.json", exc)
        return 2
    mqtt = _mqtt_service(os.environ.get("SUPERVISOR_TOKEN", ""))
    if mqtt is None:
        return 3  # the hub's exit code for "broker": the Supervisor restarts the add-on
    config = options_to_config(options, mqtt)
    target = DATA / "hub.yaml"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    hub = [sys.executable, "-m", "hub"]
    bench: subprocess.Popen[bytes] | None = None
    if options.get("serial_port"):
        # The login is in hub.yaml's broker section (-c); the URL names host and port only.
        broker = f"mqtt://{mqtt['host']}:{mqtt['port']}"
        bench = subprocess.Popen(
            [*hub, "serial", "log", "--no-tui", "-c", str(target),
             "--port", options["serial_port"], "--vehicle", options.get("serial_vehicle", "buggy"),
             "--broker", broker, "--capture-dir", str(DATA / "captures"),
             "--spool", str(DATA / "serial-spool.jsonl")]
        )  # fmt: skip
    code = subprocess.call([*hub, "run", "-c", str(target)])
    if bench is not None:
        bench.terminate()
        bench.wait(timeout=30)
    return code


if __name__ == "__main__":
    sys.exit(main())
