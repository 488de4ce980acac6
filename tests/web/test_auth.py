"""The token: every state-changing endpoint refuses without it; it is never given away."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from hub.store.sqlite import Store
from hub.web.app import create_app
from hub.web.auth import FailureLimiter, TokenStore
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


def readable_routes() -> list[str]:
    """Every GET operation the app documents, with path parameters filled in."""
    app = create_app(
        WebContext(WebSettings(), Readers(Path("/nonexistent")), TokenStore(Path("/x")))
    )
    return sorted(
        re.sub(r"\{[^}]+\}", "1", path)
        for path, operations in app.openapi()["paths"].items()
        if "get" in operations
    )


PRIVATE = {"/api/config", "/api/dead-letters", "/api/dead-letters/1"}


def test_reading_needs_the_token_by_default(tmp_path: Path) -> None:
    client, token = app_for(tmp_path)
    assert not WebSettings().public_read
    routes = readable_routes()
    assert "/api/devices" in routes and set(routes) >= PRIVATE
    for path in routes:
        refused = client.get(path)
        if path == "/api/health":  # a liveness probe: open, names no device
            assert refused.status_code in (200, 503)  # 503: no broker behind this test app
            continue
        assert refused.status_code == 401, path
        assert "token" in refused.json()["error"]
        assert refused.headers["www-authenticate"] == "Bearer"
        allowed = client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code not in (401, 403, 429), (path, allowed.status_code)
    assert client.get("/").status_code == 200  # the page itself loads, then asks for the token
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/api/live") as ws:
        ws.receive_text()
    assert closed.value.code == 4401
    with client.websocket_connect(f"/api/live?token={token}") as ws:
        ws.send_json({"subscribe": {"metrics": None, "devices": None, "alerts": True}})


def test_public_read_opens_the_overview_but_not_payloads_or_config(tmp_path: Path) -> None:
    client, token = app_for(tmp_path, public_read=True)
    for path in readable_routes():
        response = client.get(path)
        if path in PRIVATE:
            assert response.status_code == 401, path
            assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code in (
                200,
                404,
            )
        else:
            assert response.status_code not in (401, 403, 429), (path, response.status_code)
    with client.websocket_connect("/api/live") as ws:
        ws.send_json({"subscribe": {"metrics": None, "devices": None, "alerts": True}})
    assert client.post("/api/dead-letters/purge", json={}).status_code == 401


def test_no_engine_means_503(tmp_path: Path) -> None:
    client, token = app_for(tmp_path)
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/devices", headers=auth).json() == []
    for path in ("/api/alerts", "/api/alerts/history"):
        response = client.get(path, headers=auth)
        assert response.status_code == 503 and "no alert engine" in response.json()["error"]
    assert client.post("/api/alerts/1/ack", headers=auth).status_code == 503
    replay = client.post("/api/dead-letters/replay", json={"ids": [1]}, headers=auth)
    assert replay.status_code == 503 and "not attached" in replay.json()["error"]


def test_wrong_tokens_from_one_address_get_429_after_the_limit(tmp_path: Path) -> None:
    Store(tmp_path / "hub.db").close()
    tokens = TokenStore(tmp_path / "web_token.json")
    token = tokens.ensure()
    ctx = WebContext(
        WebSettings(auth_failures=3, auth_window=60), Readers(tmp_path / "hub.db"), tokens
    )
    app = create_app(ctx)
    attacker = TestClient(app, client=("192.0.2.7", 4000))
    neighbour = TestClient(app, client=("192.0.2.8", 4000))
    right = {"Authorization": f"Bearer {token}"}
    # No token at all guesses nothing: a dashboard opened before the token is entered is
    # refused, but not counted.
    for _ in range(10):
        assert attacker.get("/api/devices").status_code == 401
    for i in range(3):
        wrong = attacker.get("/api/devices", headers={"Authorization": f"Bearer wrong{i}"})
        assert wrong.status_code == 401
    limited = attacker.post(
        "/api/dead-letters/purge", json={}, headers={"Authorization": "Bearer x"}
    )
    assert limited.status_code == 429
    assert "too many wrong API tokens" in limited.json()["error"]
    assert 0 < int(limited.headers["retry-after"]) <= 60
    # While refused, even the right token waits (a guess that happens to be right would pass).
    assert attacker.get("/api/devices", headers=right).status_code == 429
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        attacker.websocket_connect(f"/api/live?token={token}") as ws,
    ):
        ws.receive_text()
    assert closed.value.code == 4429
    # Another address is not affected, and the open health probe neither.
    assert neighbour.get("/api/devices", headers=right).status_code == 200
    assert attacker.get("/api/health").status_code in (200, 503)  # answered, never 429
    assert ctx.limiter.status() == {"wrong_tokens": 3, "refused_429": 3, "blocked": 1}


def test_failure_limiter_window_and_memory_bound() -> None:
    now = [1000.0]
    limiter = FailureLimiter(limit=2, window=10, max_addresses=100, clock=lambda: now[0])
    limiter.failed("a")
    assert limiter.retry_after("a") == 0
    limiter.failed("a")
    assert limiter.retry_after("a") == 10
    now[0] += 9.5
    assert limiter.retry_after("a") == 1
    now[0] += 1
    assert limiter.retry_after("a") == 0  # the window has passed: a fresh start
    limiter.failed("a")
    assert limiter.retry_after("a") == 0
    for i in range(1000):  # an attacker with many addresses cannot grow the table
        limiter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._failures) == 100


def test_the_token_is_kept_as_its_sha256_digest(tmp_path: Path) -> None:
    tokens = TokenStore(tmp_path / "t.json")
    token = tokens.ensure()
    assert token is not None and len(token) >= 43
    stored = orjson.loads((tmp_path / "t.json").read_bytes())
    assert stored == {"scheme": "sha256", "hash": hashlib.sha256(token.encode()).hexdigest()}
    assert tokens.check(token) and not tokens.check(token[:-1]) and not tokens.check(None)
    assert not tokens.check("x" * 10_000)


def test_a_scrypt_token_file_of_an_earlier_version_is_upgraded_on_first_use(
    tmp_path: Path,
) -> None:
    path = tmp_path / "web_token.json"
    token, salt = "old-token-" + "a" * 33, b"0123456789abcdef"
    n, r, p = 2**10, 8, 1  # cheaper than the old default; the scheme is the same
    old = hashlib.scrypt(token.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    path.write_bytes(
        orjson.dumps(
            {"scheme": "scrypt", "n": n, "r": r, "p": p, "salt": salt.hex(), "hash": old.hex()}
        )
    )
    tokens = TokenStore(path)
    assert tokens.ensure() is None and tokens.legacy
    assert not tokens.check("wrong")
    assert orjson.loads(path.read_bytes())["scheme"] == "scrypt"  # a wrong token changes nothing
    assert tokens.check(token)
    assert orjson.loads(path.read_bytes())["scheme"] == "sha256" and not tokens.legacy
    assert tokens.check(token) and not tokens.check("wrong")
    assert TokenStore(path).check(token)  # and so does the next start


def test_an_unreadable_token_file_refuses_everything_and_says_why(tmp_path: Path) -> None:
    path = tmp_path / "web_token.json"
    path.write_text("{not json")
    tokens = TokenStore(path)
    assert not tokens.check("anything")
    assert tokens.error is not None and "unreadable API token file" in tokens.error


def test_security_headers_on_the_dashboard_and_the_api(tmp_path: Path) -> None:
    client, _ = app_for(tmp_path)
    for path in ("/", "/js/main.js", "/api/health", "/api/devices"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        csp = dict(
            part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";")
        )
        assert csp["script-src"] == "'self'"  # the dashboard's own files, no inline script
        assert csp["frame-ancestors"] == "'none'"
        assert csp["default-src"] == "'self'"


async def test_concurrency_is_bounded_and_the_excess_refused_at_once() -> None:
    import asyncio

    import httpx

    from hub.web.app import ConcurrencyLimit

    release = asyncio.Event()
    entered = 0

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        nonlocal entered
        entered += 1
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = ConcurrencyLimit(slow, limit=3)
    transport = httpx.ASGITransport(app=limited)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        first = [asyncio.create_task(client.get("/")) for _ in range(3)]
        while entered < 3:
            await asyncio.sleep(0.001)
        extra = await client.get("/")
        assert extra.status_code == 503 and extra.headers["retry-after"] == "1"
        assert "web.max_concurrent_requests" in extra.json()["error"]
        release.set()
        assert [r.status_code for r in await asyncio.gather(*first)] == [200, 200, 200]
        assert (await client.get("/")).status_code == 200  # room again
    assert limited.active == 0 and limited.refused == 1


def test_web_defaults_listen_on_this_machine_only_and_old_key_is_explained() -> None:
    settings = WebSettings()
    assert settings.host == "127.0.0.1" and not settings.public_read
    with pytest.raises(ValidationError, match=r"replaced by web\.public_read"):
        WebSettings(read_requires_token=True)  # type: ignore[call-arg]


def test_cors_only_for_configured_origins(tmp_path: Path) -> None:
    client, _ = app_for(tmp_path, cors_origins=["http://grafana.lan:3000"])
    allowed = client.get("/api/health", headers={"Origin": "http://grafana.lan:3000"})
    assert allowed.headers["access-control-allow-origin"] == "http://grafana.lan:3000"
    other = client.get("/api/health", headers={"Origin": "http://evil.example"})
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


def test_the_api_docs_page_runs_no_script_and_keeps_the_strict_csp(tmp_path: Path) -> None:
    client, _ = app_for(tmp_path)
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY"
    assert "<script" not in page.text  # served by the hub: no CDN, nothing to allow
    csp = page.headers["content-security-policy"]
    assert (
        "cdn." not in csp and "'unsafe-inline'" not in csp.split("script-src", 1)[-1].split(";")[0]
    )
