"""The REST API through HTTP against a real `hub run` fed by a real Mosquitto."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from hub.bus import hub_json
from hub.model import Reading
from tests.support.hubproc import wait_for
from tests.web.conftest import WebHub

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_devices_list_the_simulated_devices(web_hub: WebHub) -> None:
    devices = {d["name"]: d for d in web_hub.http.get("/api/devices").json()}
    assert {"airq-1", "airq-2", "buggy"} <= set(devices)
    air = devices["airq-1"]
    assert air["kind"] == "airq" and air["source"] == "mqtt" and air["online"] is True
    assert "pm2_5" in air["metrics"] and air["last_seen"] > now_ms() - 600_000
    assert "pack_voltage" in devices["buggy"]["metrics"]
    one = web_hub.http.get("/api/devices/airq-2").json()
    assert one["name"] == "airq-2"
    missing = web_hub.http.get("/api/devices/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_metric_catalog(web_hub: WebHub) -> None:
    catalog = {m["name"]: m for m in web_hub.http.get("/api/metrics").json()}
    assert catalog["pm2_5"]["unit"] == "µg/m³" and catalog["pack_voltage"]["family"] == "rc"
    assert web_hub.http.get("/api/metrics/cell_voltage_min").json()["unit"] == "V"
    assert web_hub.http.get("/api/metrics/nope").status_code == 404


def test_query_downsamples_and_keeps_peaks(web_hub: WebHub) -> None:
    start = now_ms() - 1_200_000
    values = [20.0 + (i % 7) * 0.1 for i in range(900)]
    values[333], values[777] = 99.5, -40.0  # one spike, one dip
    publisher = web_hub.publisher("test-peaks")
    for chunk in range(0, 900, 100):
        readings = [
            Reading("peaky", "temperature", values[i], start + i * 1000, "°C")
            for i in range(chunk, chunk + 100)
        ]
        publisher.publish("hub/readings/peaky", hub_json.encode(readings))
    publisher.flush()
    publisher.close()
    wait_for(
        lambda: (
            web_hub.hub.query(
                "SELECT count(*) FROM samples x JOIN series s ON s.id=x.series_id WHERE s.device='peaky'"
            )[0][0]
            == 900
        ),
        20,
        what="900 samples of peaky",
    )
    params = {"metric": "temperature", "device": "peaky", "from": start, "to": start + 899_999}
    full = web_hub.http.get("/api/query", params={**params, "max_points": 1000}).json()
    (series,) = full["series"]
    assert series["resolution"] == "raw" and series["mean"] == values
    small = web_hub.http.get("/api/query", params={**params, "max_points": 20}).json()
    (series,) = small["series"]
    assert len(series["ts"]) <= 20
    assert max(series["max"]) == 99.5 and min(series["min"]) == -40.0
    assert sum(series["count"]) == 900
    assert series["unit"] == "°C" and series["ts"] == sorted(series["ts"])
    latest = web_hub.http.get("/api/latest", params={"device": "peaky"}).json()
    assert latest == [
        {"device": "peaky", "metric": "temperature", "tags": {}, "unit": "°C",
         "value": values[-1], "ts": start + 899_000}
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("params", "status", "words"),
    [
        ({"metric": "co2", "from": 10, "to": 5}, 400, "'from' must not be after 'to'"),
        ({"metric": "co2", "max_points": 10**6}, 400, "max_points may be at most"),
        ({"metric": "co2", "tag": "nokey"}, 400, "key=value"),
        ({}, 422, "metric"),
        ({"metric": "co2", "from": "yesterday"}, 400, "'from': 'yesterday' is not a time"),
    ],
)
def test_query_errors_are_json_with_a_message(
    web_hub: WebHub, params: dict[str, object], status: int, words: str
) -> None:
    response = web_hub.http.get("/api/query", params=params)
    assert response.status_code == status
    assert words in response.json()["error"]


def test_errors_limits_and_cors(web_hub: WebHub) -> None:
    http = web_hub.http
    missing = http.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"] == "nothing at /api/nothing-here"
    wrong_method = http.delete("/api/devices")
    assert wrong_method.status_code == 405 and "DELETE" in wrong_method.json()["error"]
    big = http.post(
        "/api/dead-letters/purge", content=b"{" + b" " * 70_000 + b"}", headers=web_hub.auth()
    )
    assert big.status_code == 413 and "too large" in big.json()["error"]
    preflight = http.options(
        "/api/devices",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    page = http.get("/")
    assert page.status_code == 200 and "<title>Telemetry hub</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert http.get("/vendor/LICENSE").text.startswith("The MIT License")
    schema = http.get("/api/openapi.json").json()
    assert {"/api/query", "/api/devices", "/api/alerts/{alert_id}/ack", "/metrics"} <= set(
        schema["paths"]
    )


def test_rejected_messages_dead_letters_and_metrics(web_hub: WebHub) -> None:
    http = web_hub.http
    auth = web_hub.auth()  # dead letters hold raw payloads: the token, even with public_read
    publisher = web_hub.publisher("test-bad")
    publisher.publish("hub/readings/bad-dev", b"{not json")
    # An ESPHome state before its discovery: refused now, decodable once discovery is known.
    publisher.publish("latenode/sensor/mystery_gas/state", b"612")
    publisher.flush()
    wait_for(
        lambda: (
            {"invalid_json", "unknown_sensor"}
            <= {d["reason"] for d in http.get("/api/dead-letters", headers=auth).json()}
        ),
        15,
        what="two dead letters",
    )
    text = http.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    assert 'hub_ingest_rejected_total{reason="invalid_json"}' in text.text
    assert 'hub_dead_letters{reason="unknown_sensor"}' in text.text
    assert "hub_mqtt_pending " in text.text and "hub_ingest_messages_total " in text.text
    assert http.get("/api/dead-letters").status_code == 401
    letters = {d["reason"]: d for d in http.get("/api/dead-letters", headers=auth).json()}
    assert http.get(f"/api/dead-letters/{letters['invalid_json']['id']}").status_code == 401
    bad = http.get(f"/api/dead-letters/{letters['invalid_json']['id']}", headers=auth).json()
    assert bad["topic"] == "hub/readings/bad-dev" and bad["payload_preview"] == "{not json"

    discovery = {
        "name": "Mystery gas", "stat_t": "latenode/sensor/mystery_gas/state",
        "unit_of_meas": "ppm", "uniq_id": "latenode-mystery", "dev": {"ids": "latenode", "name": "latenode"},
    }  # fmt: skip
    publisher.publish("homeassistant/sensor/latenode/mystery_gas/config", orjson.dumps(discovery))
    publisher.flush()
    publisher.close()
    late_id = letters["unknown_sensor"]["id"]
    wait_for(
        lambda: (
            http.post(
                "/api/dead-letters/replay", json={"ids": [late_id]}, headers=web_hub.auth()
            ).json()["replayed"]
            == 1
        ),
        10,
        what="the late state to replay",
    )
    assert http.get(f"/api/dead-letters/{late_id}", headers=auth).json()["replayed_ts"] is not None
    latest = http.get("/api/latest", params={"device": "latenode"}).json()
    assert [(x["value"], x["unit"]) for x in latest] == [(612.0, "ppm")]

    still_bad = http.post(
        "/api/dead-letters/replay", json={"reason": "invalid_json"}, headers=web_hub.auth()
    ).json()
    assert still_bad["replayed"] == 0 and still_bad["failed"][0]["reason"] == "invalid_json"
    purged = http.post(
        "/api/dead-letters/purge", json={"reason": "invalid_json"}, headers=web_hub.auth()
    ).json()
    assert purged["purged"] >= 1
    assert (
        http.get("/api/dead-letters", params={"reason": "invalid_json"}, headers=auth).json() == []
    )


def test_health(web_hub: WebHub) -> None:
    health = web_hub.http.get("/api/health").json()
    assert health["status"] == "ok" and health["broker"] == "connected"
    assert health["readings_stored"] > 0 and health["alerts_engine"] is True


def test_sessions(web_hub: WebHub) -> None:
    sessions = web_hub.http.get("/api/sessions").json()
    assert isinstance(sessions, list)
    for session in sessions:
        assert web_hub.http.get(f"/api/sessions/{session['id']}").json() == session
    assert web_hub.http.get("/api/sessions/nope").status_code == 404
    missing = web_hub.http.get("/api/sessions/nope/export", params={"format": "json"})
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
    wrong = web_hub.http.get("/api/sessions/nope/export", params={"format": "xml"})
    assert wrong.status_code == 422 and "format" in wrong.json()["error"]


def test_live_feed_filters_and_alerts(web_hub: WebHub) -> None:
    ws_url = web_hub.base.replace("http", "ws") + "/api/live"
    with connect(ws_url, open_timeout=5) as ws:
        assert orjson.loads(ws.recv(timeout=5))["type"] == "hello"
        ws.send(orjson.dumps({"subscribe": {"devices": ["live-dev"], "metrics": ["co2"]}}).decode())
        assert orjson.loads(ws.recv(timeout=5))["type"] == "subscribed"
        publisher = web_hub.publisher("test-live")
        ts = now_ms()
        publisher.publish(
            "hub/readings/other-dev", hub_json.encode([Reading("other-dev", "co2", 1.0, ts)])
        )
        publisher.publish(
            "hub/readings/live-dev",
            hub_json.encode(
                [
                    Reading("live-dev", "temperature", 21.0, ts),
                    Reading("live-dev", "co2", 6100.0, ts),
                ]
            ),
        )
        publisher.flush()
        publisher.close()
        got_reading, alert = None, None
        deadline = time.monotonic() + 10
        while (got_reading is None or alert is None) and time.monotonic() < deadline:
            message = orjson.loads(ws.recv(timeout=10))
            if message["type"] == "readings":
                assert [r[:4] for r in message["r"]] == [["live-dev", "co2", 6100.0, ts]]
                got_reading = message
            elif message["type"] == "alert":
                alert = message["alert"]
        assert got_reading is not None
        assert alert is not None and alert["rule"] == "test_co2_extreme"
        assert alert["device"] == "live-dev" and alert["state"] == "firing"
        ws.send("not json")
        assert orjson.loads(ws.recv(timeout=5))["type"] == "error"


def test_alerts_active_history_acknowledge(web_hub: WebHub) -> None:
    http = web_hub.http
    publisher = web_hub.publisher("test-alert")
    publisher.publish(
        "hub/readings/alarm-dev", hub_json.encode([Reading("alarm-dev", "co2", 7000.0, now_ms())])
    )
    publisher.flush()
    publisher.close()

    def firing() -> dict[str, object] | None:
        return next((a for a in http.get("/api/alerts").json() if a["device"] == "alarm-dev"), None)

    alert = wait_for(firing, 10, what="the alert to fire")
    assert alert["rule"] == "test_co2_extreme" and alert["severity"] == "critical"
    refused = http.post(f"/api/alerts/{alert['id']}/ack", json={"by": "tester"})
    assert refused.status_code == 401 and "token" in refused.json()["error"]
    acked = http.post(
        f"/api/alerts/{alert['id']}/ack", json={"by": "tester"}, headers=web_hub.auth()
    )
    assert acked.status_code == 200 and acked.json()["acknowledged_by"] == "tester"
    assert firing()["acknowledged_by"] == "tester"  # type: ignore[index]
    history = http.get("/api/alerts/history", params={"device": "alarm-dev"}).json()
    assert [a["id"] for a in history] == [alert["id"]]
    unknown = http.post("/api/alerts/999999/ack", json={}, headers=web_hub.auth())
    assert unknown.status_code == 404
    silenced = http.post(
        "/api/alerts/silence",
        json={"alert_id": alert["id"], "duration_s": 600},
        headers=web_hub.auth(),
    ).json()
    assert [a["id"] for a in silenced["alerts"]] == [alert["id"]]
    assert silenced["alerts"][0]["silenced_until_ms"] == silenced["until_ms"]


def test_http_client_is_plain_httpx(web_hub: WebHub) -> None:
    # The API answers any HTTP client; no cookies or sessions are involved.
    assert httpx.get(f"{web_hub.base}/api/health", timeout=5).status_code == 200
