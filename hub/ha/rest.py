"""Alert transitions to Home Assistant's REST API (homeassistant-api): events and notify.

Every transition becomes a `hub_alert` event on the HA bus (`kind`, `alert_id`, `rule`,
`device`, `severity`, `value`, `threshold`, `message`, `since`, `state`), so automations can
trigger on event data; firing/resolved transitions of chosen severities also call the
configured notify service. Silenced transitions are not sent. Transitions wait in a bounded
queue (the oldest is dropped and counted when it is full) and a background task delivers them
in order through a worker thread, retrying with capped exponential backoff: a slow or absent
Home Assistant never blocks ingest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from typing import Any

from hub.alerts.engine import Transition
from hub.ha.settings import RestSettings

log = logging.getLogger(__name__)


class HomeAssistantRestError(Exception):
    """Home Assistant's API cannot be used with the configured URL and token."""


def event_data(transition: Transition) -> dict[str, Any]:
    alert = transition.alert
    return {
        "kind": transition.kind,
        "alert_id": alert.id,
        "rule": alert.rule,
        "device": alert.device,
        "metric": alert.metric,
        "severity": alert.severity,
        "state": alert.state,
        "value": alert.value,
        "threshold": alert.threshold,
        "message": alert.message,
        "since": alert.started_ms / 1000,
        "at": transition.at_ms / 1000,
        "acknowledged_by": alert.acknowledged_by,
    }


class RestNotifier:
    def __init__(self, settings: RestSettings) -> None:
        assert settings.url is not None and settings.token is not None
        self.settings = settings
        self._queue: collections.deque[Transition] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self.sent = 0
        self.failures = 0
        self.dropped = 0
        self.last_error = ""
        self.validated = False

    def _make_client(self) -> Any:
        from homeassistant_api import Client

        assert self.settings.url is not None and self.settings.token is not None
        return Client(
            self.settings.url,
            self.settings.token.get_secret_value(),
            global_request_kwargs={"timeout": self.settings.timeout},
        )

    def validate(self) -> str:
        """One call to the API: raises HomeAssistantRestError with a clear reason."""
        try:
            client = self._make_client()
            config = client.get_config()
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if "401" in text or "Unauthorized" in text or "nauthorized" in text:
                raise HomeAssistantRestError(
                    f"Home Assistant at {self.settings.url} refused the token (401): "
                    "create a long-lived access token in your HA profile -> Security"
                ) from None
            raise HomeAssistantRestError(
                f"Home Assistant at {self.settings.url} cannot be used: {text}"
            ) from None
        self._client = client
        self.validated = True
        return str(config.get("version", "?")) if isinstance(config, dict) else "?"

    async def start(self) -> None:
        try:
            version = await asyncio.to_thread(self.validate)
            log.info(
                "Home Assistant REST API at %s is reachable (HA %s)", self.settings.url, version
            )
        except HomeAssistantRestError as exc:
            # Reported clearly at start; delivery keeps retrying (HA may still be booting).
            self.last_error = str(exc)
            log.error("%s; alert events will be retried", exc)
        self._task = asyncio.create_task(self._run(), name="hub-ha-rest")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def submit(self, transition: Transition) -> None:
        """From the event loop: queue a transition (never blocks)."""
        if not transition.notify:
            return
        if len(self._queue) >= self.settings.queue_max:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(transition)
        self._wakeup.set()

    def _deliver(self, transition: Transition) -> None:
        if self._client is None:
            self._client = self._make_client()
        settings = self.settings
        if settings.fire_events:
            self._client.fire_event(settings.event_type, **event_data(transition))
        alert = transition.alert
        if (
            settings.notify_service
            and transition.kind in ("firing", "resolved")
            and alert.severity in settings.notify_severities
        ):
            domain, service = settings.notify_service.split(".")
            title = f"Hub alert {'resolved' if transition.kind == 'resolved' else alert.severity}"
            self._client.trigger_service(domain, service, title=title, message=alert.message)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            transition = self._queue[0]
            try:
                await asyncio.to_thread(self._deliver, transition)
            except Exception as exc:
                self.failures += 1
                if self.last_error != repr(exc):
                    log.warning("Sending alert %s to Home Assistant failed: %r; retrying",
                                transition.alert.id, exc)  # fmt: skip
                self.last_error = repr(exc)
                self._client = None  # a fresh session after an error
                await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
                delay = min(delay * 2, self.settings.retry_max)
                continue
            delay = 0.5
            self.sent += 1
            if self._queue and self._queue[0] is transition:
                self._queue.popleft()

    def status(self) -> dict[str, Any]:
        return {
            "url": self.settings.url,
            "validated": self.validated,
            "sent": self.sent,
            "queued": len(self._queue),
            "failures": self.failures,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }
