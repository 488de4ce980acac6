"""Alert transitions to Home Assistant's REST API (homeassistant-api): events and notify.

Every transition becomes a `hub_alert` event on the HA bus (`kind`, `alert_id`, `rule`,
`device`, `severity`, `value`, `threshold`, `message`, `since`, `state`), so automations can
trigger on event data; firing/resolved transitions of chosen severities also call the
configured notify service. Silenced transitions are not sent. Each event and each
notification is one delivery in a bounded queue (the oldest is dropped and counted when it is
full), delivered in order by a background task through a worker thread:

* a transient failure (Home Assistant down or restarting, a timeout, a 5xx, 401/403 while a
  token is being fixed, 408/429) keeps the delivery at the head of the queue and retries with
  capped, jittered exponential backoff;
* a permanent refusal (any other 4xx, e.g. 400 for a notify service that does not exist)
  moves that delivery to the dead letters with the reason, and the queue goes on: one bad
  notify service must not hold back every later alert.

Logging while Home Assistant is away: one WARNING when delivery starts failing, a reminder
each minute while it keeps failing, one INFO line when it recovers. `last_error` holds the
current reason (readable: "connection refused", "HTTP 500 from Home Assistant") and is cleared
by the next success.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from hub.alerts.engine import Transition
from hub.ha.settings import RestSettings

log = logging.getLogger(__name__)

REMINDER_S = 60.0
IDLE_CHECK_S = 30.0
DeadLetterPort = Callable[[str, str, bytes], Awaitable[None]]  # reason, detail, payload


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


def notification(transition: Transition) -> tuple[str, str]:
    """(title, message) of a notify call: the title names the severity (or "resolved"); a
    resolved alert's message says it cleared rather than repeating the value at firing."""
    alert = transition.alert
    if transition.kind == "resolved":
        value = "" if alert.value is None else f" (now {alert.value:g})"
        return "Hub alert resolved", f"{alert.device}: {alert.rule} cleared{value}"
    return f"Hub alert: {alert.severity}", alert.message


@dataclass(frozen=True, slots=True)
class Delivery:
    what: Literal["event", "notify"]
    transition: Transition

    @property
    def label(self) -> str:
        alert = self.transition.alert
        return f"{self.what} for alert {alert.id} ({alert.rule} on {alert.device})"


@dataclass(frozen=True, slots=True)
class Failure:
    permanent: bool
    reason: str  # short and stable: what the logs dedupe on and `last_error` shows


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def classify(exc: BaseException) -> Failure:
    """A delivery error as transient or permanent, with a readable reason (no object
    addresses: a repr with `at 0x7f..` differs every time and defeated de-duplication)."""
    status = _status_code(exc)
    if status is not None:
        if status in (401, 403):
            return Failure(False, f"HTTP {status} from Home Assistant: the token is refused")
        if status in (408, 429) or status >= 500:
            return Failure(False, f"HTTP {status} from Home Assistant")
        if 400 <= status < 500:
            detail = _short(str(exc))
            return Failure(True, f"HTTP {status} from Home Assistant" + (f": {detail}" if detail else ""))  # fmt: skip
    name = type(exc).__name__
    if "Timeout" in name or isinstance(exc, TimeoutError):
        return Failure(False, "timed out")
    text = _ADDRESS.sub("", str(exc))
    errno = _ERRNO.search(text)
    if errno:
        return Failure(False, errno.group(1).strip().lower())
    if isinstance(exc, OSError) or "Connection" in name:
        return Failure(False, "cannot connect")
    return Failure(False, f"{name}: {_short(text)}")


def _status_code(exc: BaseException) -> int | None:
    """The HTTP status of a homeassistant-api error (or any error carrying one)."""
    for attr in ("status_code", "status"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "UnauthorizedError" in names:
        return 401
    if "EndpointNotFoundError" in names:
        return 404
    if "MethodNotAllowedError" in names:
        return 405
    if "RequestTimeoutError" in names:
        return None
    if type(exc).__name__ == "RequestError":  # homeassistant-api raises it for a 400
        return 400
    return None


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RestNotifier:
    def __init__(self, settings: RestSettings, dead_letter: DeadLetterPort | None = None) -> None:
        assert settings.url is not None and settings.token is not None
        self.settings = settings
        self._dead_letter = dead_letter
        self._queue: collections.deque[Delivery] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self.sent = 0
        self.failures = 0
        self.dropped = 0
        self.dead_lettered = 0
        self.last_error = ""
        self.validated = False
        self._failing_since: float | None = None
        self._last_reminder = 0.0

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
            failure = classify(exc)
            if "token" in failure.reason:
                raise HomeAssistantRestError(
                    f"Home Assistant at {self.settings.url} refused the token (401): "
                    "create a long-lived access token in your HA profile -> Security"
                ) from None
            raise HomeAssistantRestError(
                f"Home Assistant at {self.settings.url} cannot be used: {failure.reason}"
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
        """From the event loop: queue a transition's event and notification (never blocks)."""
        if not transition.notify:
            return
        settings = self.settings
        if settings.fire_events:
            self._enqueue(Delivery("event", transition))
        if (
            settings.notify_service
            and transition.kind in ("firing", "resolved")
            and transition.alert.severity in settings.notify_severities
        ):
            self._enqueue(Delivery("notify", transition))

    def _enqueue(self, delivery: Delivery) -> None:
        if len(self._queue) >= self.settings.queue_max:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(delivery)
        self._wakeup.set()

    def _deliver(self, delivery: Delivery) -> None:
        if self._client is None:
            self._client = self._make_client()
        settings = self.settings
        if delivery.what == "event":
            self._client.fire_event(settings.event_type, **event_data(delivery.transition))
            return
        assert settings.notify_service is not None
        domain, service = settings.notify_service.split(".")
        title, message = notification(delivery.transition)
        self._client.trigger_service(domain, service, title=title, message=message)

    async def _run(self) -> None:
        delay = 0.5
        while True:
            if not self._queue:
                self._wakeup.clear()
                if not self.last_error:
                    await self._wakeup.wait()
                    continue
                # Nothing to send but the last attempt (or the check at start) failed: look
                # again now and then, so `hub status` does not show an error that is over.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), IDLE_CHECK_S)
                if not self._queue:
                    await self._check_idle()
                continue
            delivery = self._queue[0]
            try:
                await asyncio.to_thread(self._deliver, delivery)
            except Exception as exc:
                failure = classify(exc)
                self._client = None  # a fresh session after an error
                if failure.permanent:
                    await self._give_up(delivery, failure)
                    continue
                self.failures += 1
                self._failing(failure)
                await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
                delay = min(delay * 2, self.settings.retry_max)
                continue
            delay = 0.5
            self.sent += 1
            self._recovered()
            if self._queue and self._queue[0] is delivery:
                self._queue.popleft()

    async def _check_idle(self) -> None:
        try:
            await asyncio.to_thread(self.validate)
        except HomeAssistantRestError as exc:
            log.debug("%s", exc)
            return
        if self._failing_since is None:
            log.info("Home Assistant REST API at %s is reachable again", self.settings.url)
        self._recovered()

    def _failing(self, failure: Failure) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = self._last_reminder = now
            log.warning(
                "Home Assistant REST at %s is failing: %s; %d deliveries queued, retrying",
                self.settings.url, failure.reason, len(self._queue),
            )  # fmt: skip
        elif now - self._last_reminder >= REMINDER_S:
            self._last_reminder = now
            log.warning(
                "Home Assistant REST still failing after %.0f s: %s; %d deliveries queued",
                now - self._failing_since, failure.reason, len(self._queue),
            )  # fmt: skip
        elif failure.reason != self.last_error:
            log.debug("Home Assistant REST failing: %s", failure.reason)
        self.last_error = failure.reason

    def _recovered(self) -> None:
        if self._failing_since is not None:
            log.info(
                "Home Assistant REST recovered after %.0f s; %d deliveries queued",
                time.monotonic() - self._failing_since, len(self._queue) - 1,
            )  # fmt: skip
            self._failing_since = None
        self.last_error = ""

    async def _give_up(self, delivery: Delivery, failure: Failure) -> None:
        if self._queue and self._queue[0] is delivery:
            self._queue.popleft()
        self.dead_lettered += 1
        log.warning(
            "Home Assistant refused the %s for good (%s): kept in the dead letters",
            delivery.label, failure.reason,
        )  # fmt: skip
        # Home Assistant answered: it is reachable, whatever it thought of this request.
        self._recovered()
        if self._dead_letter is None:
            return
        alert = delivery.transition.alert
        payload = orjson.dumps(
            {
                "delivery": delivery.what,
                "service": self.settings.notify_service if delivery.what == "notify" else None,
                "event_type": self.settings.event_type if delivery.what == "event" else None,
                "event": event_data(delivery.transition),
            }
        )
        detail = f"{delivery.what} for alert {alert.id} ({alert.rule} on {alert.device}): {failure.reason}"  # fmt: skip
        try:
            await self._dead_letter(f"ha_{delivery.what}_refused", detail, payload)
        except Exception:
            log.exception("Cannot keep the refused %s as a dead letter", delivery.label)

    def status(self) -> dict[str, Any]:
        return {
            "url": self.settings.url,
            "validated": self.validated,
            "sent": self.sent,
            "queued": len(self._queue),
            "failures": self.failures,
            "dropped": self.dropped,
            "dead_lettered": self.dead_lettered,
            "failing_since_s": (
                round(time.monotonic() - self._failing_since, 1) if self._failing_since else None
            ),
            "last_error": self.last_error,
        }
