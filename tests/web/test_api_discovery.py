"""The API is easy to find and to call (issue #15): the OpenAPI document at the usual place,
documentation that works offline, the CLI's durations and ISO times in queries, and a 400
naming any query parameter a route does not take. The app over a store of its own."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hub.model import Reading
from hub.store.sqlite import Batch, Store
from hub.web.app import create_app
from hub.web.auth import TokenStore
from hub.web.context import WebContext
from hub.web.reader import Readers
from hub.web.settings import WebSettings


def minute_samples() -> list[tuple[int, float]]:
    """One sample a minute for two hours, ending now: value = minutes before now.

    Made when a test runs, not when the module is collected: in the full suite the test runs
    minutes after collection, and relative windows ("5m") would miss samples made then."""
    now_ms = int(time.time() * 1000)
    return [(now_ms - m * 60_000, float(m)) for m in range(120, -1, -1)]


@pytest.fixture
def samples() -> list[tuple[int, float]]:
    return minute_samples()


@pytest.fixture
def client(tmp_path: Path, samples: list[tuple[int, float]]) -> TestClient:
    store = Store(tmp_path / "hub.db")
    batch = Batch(readings=[Reading("airq-1", "co2", v, ts, "ppm") for ts, v in samples])
    store.commit(batch)
    store.close()
    # Reading without the token (#14: off by default): these tests are about the parameters.
    ctx = WebContext(
        WebSettings(public_read=True),
        Readers(tmp_path / "hub.db"),
        TokenStore(tmp_path / "web_token.json"),
    )
    return TestClient(create_app(ctx))


def values(client: TestClient, **params: object) -> list[float]:
    response = client.get("/api/query", params={"metric": "co2", **params})
    assert response.status_code == 200, response.text
    (series,) = response.json()["series"]
    return list(series["mean"])


def test_openapi_at_the_root_and_under_api(client: TestClient) -> None:
    root = client.get("/openapi.json")
    assert root.status_code == 200
    assert root.json() == client.get("/api/openapi.json").json()
    assert "/api/query" in root.json()["paths"]
    assert "/openapi.json" not in root.json()["paths"]  # the document does not list itself
    docs = client.get("/docs", follow_redirects=False)
    assert docs.status_code in (307, 308) and docs.headers["location"] == "/api/docs"


def test_api_docs_need_nothing_from_the_internet(client: TestClient) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    # Every route is described on the page itself: method, path, summary, parameters.
    assert "GET" in html and "/api/query" in html and "/api/sessions" in html
    assert "max_points" in html and "Samples of one metric over a time range" in html
    assert 'href="/api/openapi.json"' in html
    # Nothing is loaded from elsewhere: no remote script, style, font or image.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), html[:2000]
    assert "<script" not in html
    # The page keeps the dashboard's strict policy (nothing needs relaxing for it).
    assert "default-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("params", "minutes"),
    [
        ({"since": "5m"}, range(5, -1, -1)),
        ({"from": "10m", "to": "5m"}, range(10, 4, -1)),
        ({"since": "1h 30m", "until": "80m"}, range(90, 79, -1)),
    ],
)
def test_query_takes_durations_like_the_cli(
    client: TestClient, params: dict[str, str], minutes: range
) -> None:
    got = values(client, **params)
    # The window is relative to the request's "now", a moment after the samples were made.
    assert set(got) <= set(map(float, minutes)) and len(got) >= len(minutes) - 1, got


def test_query_takes_iso_times_and_still_unix_ms(
    client: TestClient, samples: list[tuple[int, float]]
) -> None:
    start_ms, end_ms = samples[10][0], samples[20][0]
    local = datetime.fromtimestamp(start_ms / 1000).isoformat(timespec="milliseconds")
    utc = datetime.fromtimestamp(end_ms / 1000).astimezone().isoformat(timespec="milliseconds")
    assert values(client, **{"from": local, "to": utc}) == [float(110 - i) for i in range(11)]
    assert values(client, **{"from": start_ms, "to": end_ms}) == [float(110 - i) for i in range(11)]


@pytest.mark.parametrize(
    ("path", "params", "words"),
    [
        ("/api/query", {"metric": "co2", "sincee": "5m"}, ["sincee", "did you mean 'since'"]),
        ("/api/query", {"metric": "co2", "limit": "5", "x": "1"}, ["'limit'", "'x'"]),
        ("/api/latest", {"devise": "airq-1"}, ["devise", "device"]),
        ("/api/devices", {"metric": "co2"}, ["metric", "takes no query parameters"]),
        ("/api/sessions", {"vehicl": "buggy"}, ["vehicl", "vehicle"]),
        ("/api/alerts/history", {"since": "5m"}, ["since"]),
    ],
)
def test_unknown_query_parameters_are_a_400_naming_them(
    client: TestClient, path: str, params: dict[str, str], words: list[str]
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    for word in words:
        assert word in error, error


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"from": "yesterday"}, ["'from'", "'yesterday'", "10m", "ISO"]),
        ({"since": "5m", "from": "10m"}, ["'since'", "'from'", "one of"]),
        ({"to": "2026-13-01T10:00"}, ["'to'"]),
        ({"since": "5m", "to": "10m"}, ["'from' must not be after 'to'"]),
    ],
)
def test_bad_times_are_a_400_that_says_what_works(
    client: TestClient, params: dict[str, str], words: list[str]
) -> None:
    response = client.get("/api/query", params={"metric": "co2", **params})
    assert response.status_code == 400, response.text
    for word in words:
        assert word in response.json()["error"], response.json()
