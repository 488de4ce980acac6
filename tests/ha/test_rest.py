"""The REST notifier's delivery rules (issue #20 point 5, issue #14 HA REST) with a fake
client in place of homeassistant-api; the real Home Assistant runs in tests/homeassistant."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from hub.alerts.engine import Transition
from hub.alerts.store import Alert
from hub.ha.rest import RestNotifier, classify
from hub.ha.settings import RestSettings


class RequestError(Exception):
    """Shaped like homeassistant_api.errors.RequestError (what it raises for a 400)."""


class FakeClient:
    def __init__(self, script: list[Exception | None]) -> None:
        self.script = script
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _step(self, what: str, data: dict[str, Any]) -> None:
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        self.calls.append((what, data))

    def fire_event(self, event_type: str, **data: Any) -> None:
        self._step(event_type, data)

    def trigger_service(self, domain: str, service: str, **data: Any) -> None:
        self._step(f"{domain}.{service}", data)


def _transition(alert_id: int, kind: str = "firing") -> Transition:
    alert = Alert(id=alert_id, rule="air_co2_high", device="airq-1", metric="co2",
                  severity="warning", state="firing" if kind == "firing" else "resolved",
                  value=1500.0, threshold=1400, unit="ppm", message="airq-1: CO2 reached 1500 ppm",
                  device_class="problem", started_ms=1_000, updated_ms=1_000)  # fmt: skip
    return Transition(kind, alert, 1_000)  # type: ignore[arg-type]


def _settings(**extra: Any) -> RestSettings:
    return RestSettings.model_validate({"enabled": True, "url": "http://127.0.0.1:9/api",
                                        "token": "t", "retry_max": "0.05s", **extra})  # fmt: skip


async def _drain(notifier: RestNotifier, timeout: float = 10) -> None:
    async def wait() -> None:
        while notifier.status()["queued"]:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(wait(), timeout)


def test_permanent_4xx_goes_to_dead_letters_and_the_queue_goes_on() -> None:
    letters: list[tuple[str, str, bytes]] = []

    async def dead_letter(reason: str, detail: str, payload: bytes) -> None:
        letters.append((reason, detail, payload))

    async def run() -> FakeClient:
        notifier = RestNotifier(_settings(notify_service="notify.nope"), dead_letter)
        client = FakeClient([None, RequestError("400: Service not found")])
        notifier._client = client
        notifier._make_client = lambda: client  # type: ignore[method-assign]
        notifier._task = asyncio.create_task(notifier._run())
        notifier.submit(_transition(1))  # event ok, notify refused for good
        notifier.submit(_transition(2))  # both must still arrive
        await _drain(notifier)
        await notifier.stop()
        assert notifier.status()["dead_lettered"] == 1 and notifier.last_error == ""
        return client

    client = asyncio.run(run())
    assert [c[0] for c in client.calls] == ["hub_alert", "hub_alert", "notify.nope"]
    assert letters and letters[0][0] == "ha_notify_refused"
    assert "HTTP 400" in letters[0][1] and "alert 1" in letters[0][1]


def test_outage_logs_once_when_failing_and_once_when_recovered(caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    refused = ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded "
        "(Caused by NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f3a2c1d>: "
        "Failed to establish a new connection: [Errno 111] Connection refused'))"
    )

    async def run() -> RestNotifier:
        notifier = RestNotifier(_settings())
        client = FakeClient([refused] * 6)
        notifier._make_client = lambda: client  # type: ignore[method-assign]
        notifier._task = asyncio.create_task(notifier._run())
        notifier.submit(_transition(1))
        await _drain(notifier)
        await notifier.stop()
        return notifier

    with caplog.at_level(logging.INFO, logger="hub.ha.rest"):
        notifier = asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len([line for line in lines if "failing" in line]) == 1, lines
    assert len([line for line in lines if "recovered" in line]) == 1, lines
    assert notifier.status()["last_error"] == "" and notifier.failures == 6


def test_reasons_are_readable_and_stable() -> None:
    a = classify(ConnectionError("<HTTPConnection object at 0x7f01>: [Errno 111] Connection refused"))  # fmt: skip
    b = classify(ConnectionError("<HTTPConnection object at 0x7f99>: [Errno 111] Connection refused"))  # fmt: skip
    assert a == b and a.reason == "connection refused" and not a.permanent
    assert classify(RequestError("bad")).permanent

    class InternalServerError(Exception):
        status_code = 502

    assert not classify(InternalServerError()).permanent

    class UnauthorizedError(Exception):
        pass

    assert not classify(UnauthorizedError()).permanent  # a token being fixed: keep retrying


def test_error_from_start_is_cleared_once_home_assistant_answers(monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Home Assistant down when the hub starts, nothing to send afterwards: `hub status` must
    not keep showing the start-up error once Home Assistant is back."""
    from hub.ha import rest
    from hub.ha.rest import HomeAssistantRestError

    monkeypatch.setattr(rest, "IDLE_CHECK_S", 0.05)
    answers = [HomeAssistantRestError("cannot be used: connection refused"), None]

    async def run() -> RestNotifier:
        notifier = RestNotifier(_settings())

        def validate() -> str:
            answer = answers.pop(0) if answers else None
            if answer is not None:
                raise answer
            return "2026.2.3"

        notifier.validate = validate  # type: ignore[method-assign]
        await notifier.start()
        assert notifier.last_error
        for _ in range(100):
            if not notifier.last_error:
                break
            await asyncio.sleep(0.02)
        await notifier.stop()
        return notifier

    assert asyncio.run(run()).last_error == ""
