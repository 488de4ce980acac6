"""The token: every state-changing endpoint refuses without it; it is never given away."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.store.sqlite import Store
from hub.web.app import create_app
from hub.web.auth import TokenStore
from hub.web.context import WebContext
from hub.web.reader import Readers
from hub.web.settings import WebSettings
from tests.web.conftest import WebHub

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def app_for(tmp_path: Path, **settings: object) -> tuple[TestClient, str]:
    Store(tmp_path / "hub.db").close()
    tokens = TokenStore(tmp_path / "web_token.json")
    token = tokens.ensure()
    assert token is not None
    ctx = WebContext(WebSettings(**settings), Readers(tmp_path / "hub.db"), tokens)
    return TestClient(create_app(ctx)), token


def mutating_routes() -> list[tuple[str, str]]:
    app = create_app(
        WebContext(WebSettings(), Readers(Path("/nonexistent")), TokenStore(Path("/x")))
    )
    # Every operation the app documents (the OpenAPI schema lists all of them).
    found = []
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if method.upper() in MUTATING:
                found.append((method.upper(), re.sub(r"\{[^}]+\}", "1", path)))
    return sorted(found)


def test_the_mutating_endpoints_are_known() -> None:
    assert mutating_routes() == [
        ("POST", "/api/alerts/1/ack"),
        ("POST", "/api/alerts/silence"),
        ("POST", "/api/dead-letters/purge"),
        ("POST", "/api/dead-letters/replay"),
    ]


@pytest.mark.mosquitto
@pytest.mark.parametrize(("method", "path"), mutating_routes())
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", "Basic abc", "Bearer"])
def test_every_mutating_endpoint_refuses_without_the_token(
    web_hub: WebHub, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    before = web_hub.hub.query("SELECT count(*) FROM dead_letters")
    response = web_hub.http.request(
        method, path, json={"reason": "x", "duration_s": 5}, headers=headers
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "token" in response.json()["error"]
    assert web_hub.hub.query("SELECT count(*) FROM dead_letters") == before


@pytest.mark.mosquitto
def test_config_needs_the_token_and_no_secret_leaves(web_hub: WebHub) -> None:
    assert web_hub.http.get("/api/config").status_code == 401
    config = web_hub.http.get("/api/config", headers=web_hub.auth())
    assert config.status_code == 200 and config.json()["web"]["port"] > 0
    token = web_hub.token
    for path in ("/api/config", "/api/health", "/metrics", "/api/devices", "/api/openapi.json"):
        assert token not in web_hub.http.get(path, headers=web_hub.auth()).text
    assert token not in (web_hub.hub.data_dir / "status.json").read_text()
    stored = web_hub.hub.data_dir / "web_token.json"
    assert token not in stored.read_text()
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600
    # Shown once: the log names it on the first run only.
    assert web_hub.hub.log().count(token) == 1


def test_reading_can_require_the_token(tmp_path: Path) -> None:
    client, token = app_for(tmp_path, read_requires_token=True)
    refused = client.get("/api/devices")
    assert refused.status_code == 401 and "token" in refused.json()["error"]
    assert client.get("/api/devices", headers={"Authorization": f"Bearer {token}"}).json() == []
    assert client.get("/").status_code == 200  # the page itself loads, then asks for the token


def test_reading_is_open_by_default_and_no_engine_means_503(tmp_path: Path) -> None:
    client, token = app_for(tmp_path)
    assert client.get("/api/devices").json() == []
    for path in ("/api/alerts", "/api/alerts/history"):
        response = client.get(path)
        assert response.status_code == 503 and "no alert engine" in response.json()["error"]
    auth = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/alerts/1/ack", headers=auth).status_code == 503
    replay = client.post("/api/dead-letters/replay", json={"ids": [1]}, headers=auth)
    assert replay.status_code == 503 and "not attached" in replay.json()["error"]


def test_cors_only_for_configured_origins(tmp_path: Path) -> None:
    client, _ = app_for(tmp_path, cors_origins=["http://grafana.lan:3000"])
    allowed = client.get("/api/devices", headers={"Origin": "http://grafana.lan:3000"})
    assert allowed.headers["access-control-allow-origin"] == "http://grafana.lan:3000"
    other = client.get("/api/devices", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_a_reset_token_file_invalidates_the_old_token(tmp_path: Path) -> None:
    tokens = TokenStore(tmp_path / "t.json")
    first = tokens.ensure()
    assert first and tokens.check(first) and not tokens.check(first + "x")
    assert tokens.ensure() is None  # already there: nothing new to show
    (tmp_path / "t.json").unlink()
    second = tokens.ensure()
    assert second and second != first
    assert tokens.check(second) and not tokens.check(first)


def test_token_reset_from_the_cli_takes_effect_without_a_restart(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support.hubproc import REPO
    from tests.web.conftest import start_web_hub, stop_web_hub

    web = start_web_hub(tmp_path)

    def hub_web_token(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "hub", "web", "token", "-c", str(web.hub.config_path), *args],
            cwd=web.hub.workdir, env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip

    try:
        assert web.http.get("/api/config", headers=web.auth()).status_code == 200
        shown = hub_web_token()
        assert "An API token is set" in shown and web.token not in shown
        reset = hub_web_token("--reset")
        fresh = reset.splitlines()[1].strip()
        assert fresh and fresh != web.token
        assert web.http.get("/api/config", headers=web.auth()).status_code == 401
        new_auth = {"Authorization": f"Bearer {fresh}"}
        assert web.http.get("/api/config", headers=new_auth).status_code == 200
        assert fresh not in (web.hub.data_dir / "web_token.json").read_text()
    finally:
        stop_web_hub(web)
