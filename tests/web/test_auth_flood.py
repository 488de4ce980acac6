"""Nobody knocks the hub over with wrong tokens (issue #14), against a real `hub run`.

1,000 requests with wrong tokens in 10 s from 50 connections: the hub's RSS grows by less
than 30 MB, /api/health keeps answering in under 100 ms (p99), and the flood gets 429 once
the per-address limit is reached. bench/auth_flood.py prints the same figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.flood import flood
from tests.web.conftest import start_web_hub, stop_web_hub

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def test_a_wrong_token_flood_costs_little_and_gets_429(tmp_path: Path) -> None:
    web = start_web_hub(tmp_path)
    try:
        assert web.hub.proc is not None
        limit = web.hub.config["web"].get("auth_failures", 10)
        result = flood(web.base, web.hub.proc.pid, total=1000, seconds=10, connections=50)
        print(result.summary())
        assert result.errors == 0, result.summary()
        assert set(result.codes) <= {401, 429}, result.summary()
        # The first `limit` wrong tokens are 401; the rest of the flood is refused unread.
        assert result.codes.get(401, 0) <= limit + 50, result.summary()  # + those in flight
        assert result.first_429 is not None and result.first_429 <= limit + 50
        assert result.rss_peak_mb - result.rss_before_mb < 30, result.summary()
        assert result.health_failures == 0 and len(result.health_ms) >= 50, result.summary()
        assert result.pct(99) < 100, result.summary()
        # The right token still works from another address; from the flooding one it waits.
        assert web.http.get("/api/config", headers=web.auth()).status_code == 429
        assert "wrong API tokens" in web.hub.log()
        assert web.hub.status()["web"]["auth"]["refused_429"] >= 900
    finally:
        stop_web_hub(web)
