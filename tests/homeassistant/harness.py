"""A real Home Assistant Core for tests and the bench (specs/home-assistant.md).

`ensure_hass()` runs tools/homeassistant.sh (cached build of CPython + the HA venv);
`HomeAssistant(workdir, broker_port)` writes a minimal config with our blueprints, starts
`hass` as its own process, onboards an owner over HTTP and adds the MQTT integration by config
flow. REST helpers use the standard library so they need nothing from the hub.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.mosquitto import free_port

REPO = Path(__file__).resolve().parents[2]
INSTALLER = REPO / "tools" / "homeassistant.sh"
BLUEPRINTS = REPO / "deploy" / "homeassistant" / "blueprints" / "automation"


class HassUnavailable(Exception):
    """Home Assistant could not be installed on this machine (the reason is the message)."""


def ensure_hass(timeout: float = 1800) -> str:
    """Path of `hass`, building it on first use (minutes); HassUnavailable with the reason."""
    try:
        done = subprocess.run(
            ["bash", str(INSTALLER)], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HassUnavailable(f"{INSTALLER.name} did not finish: {exc}") from None
    hass = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not hass or not os.access(hass, os.X_OK):
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise HassUnavailable(f"{INSTALLER.name} exited {done.returncode}:\n{tail}")
    return hass


def _request(method: str, url: str, token: str | None = None, body: Any = None,
             form: dict[str, str] | None = None, timeout: float = 10) -> Any:  # fmt: skip
    headers = {}
    data = None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


class HomeAssistant:
    def __init__(self, hass: str, workdir: Path, broker_port: int,
                 automations: list[dict[str, Any]] | None = None,
                 extra_config: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.hass = hass
        self.config_dir = workdir / "ha-config"
        self.port = free_port()
        self.broker_port = broker_port
        self.base = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.refresh_token = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "ha.log"
        self._write_config(automations or [], extra_config or {})

    @property
    def api_url(self) -> str:
        return f"{self.base}/api"

    def _write_config(self, automations: list[dict[str, Any]], extra: dict[str, Any]) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "homeassistant": {
                "name": "HubTest", "latitude": 52.0, "longitude": 4.0, "elevation": 0,
                "unit_system": "metric", "time_zone": "UTC", "country": "NL", "currency": "EUR",
            },
            "logger": {"default": "warning"},
            "http": {"server_host": "127.0.0.1", "server_port": self.port},
            "api": None,
            "config": None,
            "onboarding": None,
            "input_boolean": {
                "hub_alert_latch": {"name": "Hub alert latch"},
                "hub_fan": {"name": "Hub fan"},
                "hub_event_firing": {"name": "Hub event firing"},
                "hub_event_resolved": {"name": "Hub event resolved"},
            },
            **extra,
        }  # fmt: skip
        text = yaml.safe_dump(config, sort_keys=False).replace(" null\n", "\n")
        (self.config_dir / "configuration.yaml").write_text(
            text + "automation: !include automations.yaml\n"
        )
        (self.config_dir / "automations.yaml").write_text(yaml.safe_dump(automations or []))
        target = self.config_dir / "blueprints" / "automation" / "hub"
        target.mkdir(parents=True, exist_ok=True)
        for blueprint in BLUEPRINTS.glob("*.yaml"):
            shutil.copy(blueprint, target / blueprint.name)

    def start(self, timeout: float = 120) -> HomeAssistant:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [self.hass, "-c", str(self.config_dir), "--skip-pip"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        probe = "/auth/providers" if self.refresh_token else "/api/onboarding"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"hass exited with {self.proc.returncode}:\n{self.log()[-4000:]}"
                )
            try:
                # A finished onboarding unregisters /api/onboarding, so a restart probes the
                # login providers instead (served as soon as http and auth are up).
                _request("GET", f"{self.base}{probe}", timeout=2)
                break
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.3)
        else:
            raise AssertionError(f"HA API not up within {timeout} s:\n{self.log()[-4000:]}")
        if self.refresh_token:
            self._refresh()  # a restart: onboarding and the MQTT entry are already stored
        else:
            self._onboard()
            self._add_mqtt()
        return self

    def restart(self, down_for: float = 0.0) -> HomeAssistant:
        """Stop, stay down `down_for` s, start again (same config, owner and MQTT entry)."""
        self.stop()
        time.sleep(down_for)
        return self.start()

    def _refresh(self) -> None:
        tokens = _request("POST", f"{self.base}/auth/token", form={
            "grant_type": "refresh_token", "refresh_token": self.refresh_token,
            "client_id": f"{self.base}/",
        })  # fmt: skip
        self.token = tokens["access_token"]
        # The API answers before every integration is set up: wait for MQTT's entities.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            entries = self.ws("config_entries/get", domain="mqtt")
            if entries and entries[0].get("state") == "loaded":
                return
            time.sleep(0.2)
        raise AssertionError(f"MQTT not loaded after restart:\n{self.log()[-3000:]}")

    def ws(self, command: str, **data: Any) -> Any:
        """One command over the websocket API (the device and entity registries live there)."""
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{self.port}/api/websocket", open_timeout=10) as conn:
            json.loads(conn.recv(timeout=10))  # auth_required
            conn.send(json.dumps({"type": "auth", "access_token": self.token}))
            auth = json.loads(conn.recv(timeout=10))
            assert auth.get("type") == "auth_ok", auth
            conn.send(json.dumps({"id": 1, "type": command, **data}))
            while True:
                reply = json.loads(conn.recv(timeout=30))
                if reply.get("id") == 1 and reply.get("type") == "result":
                    assert reply.get("success"), reply
                    return reply.get("result")

    def devices(self) -> list[dict[str, Any]]:
        return list(self.ws("config/device_registry/list"))

    def mqtt_devices(self) -> list[dict[str, Any]]:
        """Devices the MQTT integration has a share in (the hub's and ESPHome's over MQTT)."""
        entry = self.ws("config_entries/get", domain="mqtt")[0]["entry_id"]
        return [d for d in self.devices() if entry in d.get("config_entries", [])]

    def entities(self) -> list[dict[str, Any]]:
        return list(self.ws("config/entity_registry/list"))

    def states(self) -> dict[str, dict[str, Any]]:
        return {s["entity_id"]: s for s in self.get("/api/states")}

    def set_automations(self, automations: list[dict[str, Any]]) -> None:
        """Replace automations.yaml and reload it (one HA serves several tests)."""
        (self.config_dir / "automations.yaml").write_text(yaml.safe_dump(automations))
        self.post("/api/services/automation/reload")

    def _onboard(self) -> None:
        client_id = f"{self.base}/"
        auth = _request("POST", f"{self.base}/api/onboarding/users", body={
            "client_id": client_id, "name": "Test Owner", "username": "owner",
            "password": "hub-test-password-1", "language": "en",
        })  # fmt: skip
        tokens = _request("POST", f"{self.base}/auth/token", form={
            "grant_type": "authorization_code", "code": auth["auth_code"], "client_id": client_id,
        })  # fmt: skip
        self.token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]
        # The remaining onboarding steps, as a person clicking "Next" would: without them the
        # frontend shows the onboarding wizard instead of the page a test opens.
        self.post("/api/onboarding/core_config")
        self.post("/api/onboarding/analytics")
        self.post("/api/onboarding/integration", {"client_id": client_id, "redirect_uri": f"{self.base}/?auth_callback=1"})  # fmt: skip

    def _add_mqtt(self) -> None:
        flow = self.post("/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False})  # fmt: skip
        result = self.post(
            f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"broker": "127.0.0.1", "port": self.broker_port},
        )
        assert result.get("type") == "create_entry", result

    def get(self, path: str) -> Any:
        return _request("GET", f"{self.base}{path}", self.token)

    def post(self, path: str, body: Any = None) -> Any:
        return _request("POST", f"{self.base}{path}", self.token, body if body is not None else {})

    def state(self, entity_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.get(f"/api/states/{entity_id}"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def wait_state(self, entity_id: str, state: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            seen = self.state(entity_id)
            if seen is not None and seen.get("state") == state:
                return seen
            time.sleep(0.1)
        raise AssertionError(f"{entity_id} is {seen and seen.get('state')!r}, not {state!r} after {timeout} s\n{self.log()[-3000:]}")  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
