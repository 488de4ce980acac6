"""The web dashboard and REST API as a `hub run` component: uvicorn inside the hub's loop.

The listening socket is bound here, so a port in use is a logged error and a hub without its
dashboard, not a dead hub. uvicorn's own signal handling is switched off: the hub owns SIGINT
and SIGTERM and stops this component in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import uvicorn

from hub.runtime import until_tick
from hub.web.app import create_app
from hub.web.auth import TokenStore
from hub.web.context import WebContext
from hub.web.live import LiveFeed
from hub.web.reader import open_readers
from hub.web.routes.alerts import alert_dict

if TYPE_CHECKING:
    from hub.ports import Ports

log = logging.getLogger(__name__)

_ENGINE_METHODS = ("active", "history", "acknowledge")


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server inside the hub's loop.

    uvicorn's main loop wakes ten times a second to refresh the Date header (once a second)
    and to look at `should_exit`: nine tenths of an idle hub's loop wake-ups. Here it ticks
    once a second, and setting `should_exit` wakes it at once, so stopping is as quick.
    """

    _exit_event: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the hub handles signals

    @property
    def should_exit(self) -> bool:
        return self.__dict__.get("_should_exit", False)

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self.__dict__["_should_exit"] = value
        if value and self._exit_event is not None:
            self._exit_event.set()

    async def main_loop(self) -> None:
        self._exit_event = exit_event = asyncio.Event()
        counter = 0  # on_tick refreshes the Date header when counter % 10 == 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until_tick(1.0)):  # with the hub's other ticks
                    await exit_event.wait()
            should_exit = await self.on_tick(counter)


def find_alert_engine(find: Callable[[str], Any]) -> Any | None:
    """The alert engine of a running hub (the alerts component's), through the find port."""
    component = find("alerts")
    candidates = [getattr(component, "engine", None), component]
    for candidate in candidates:
        if candidate is not None and all(
            callable(getattr(candidate, m, None)) for m in _ENGINE_METHODS
        ):
            return candidate
    return None


def show_new_token(token: str, path: Path, stream: TextIO | None = None) -> None:
    """Show a new token once, on the terminal: written to stderr, never to the log.

    The log is kept (journald, container logs, log shippers); a secret in it stays readable
    by whoever reads logs. Under systemd, stderr is the journal too, so there the token is not
    shown at all and the log says how to get one.
    """
    stream = stream or sys.stderr
    if _stderr_is_journal(stream):
        log.warning(
            "Made a new web API token, not shown because stderr goes to the journal: run "
            "'hub web token --reset' in a terminal to get one"
        )
        return
    stream.write(f"New web API token (shown once, stored hashed in {path}): {token}\n")
    stream.flush()
    log.warning(
        "Made a new web API token and showed it on the terminal (stderr) once; it is not "
        "logged. 'hub web token --reset' replaces it"
    )


def _stderr_is_journal(stream: TextIO) -> bool:
    # systemd sets JOURNAL_STREAM=<device>:<inode> of the journal socket it gave the service.
    journal = os.environ.get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return journal == f"{info.st_dev}:{info.st_ino}"


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class WebComponent:
    name = "web"

    def __init__(self, ports: Ports) -> None:
        self.ports = ports
        self.settings = ports.config.web
        self.token_path = ports.config.data_dir / self.settings.token_file
        self.tokens = TokenStore(self.token_path)
        self.live = LiveFeed(
            self.settings.live_queue, self.settings.live_max_clients, self.settings.live_coalesce
        )
        self.readers = open_readers(ports.reader)
        self.server: _EmbeddedServer | None = None
        self.url: str | None = None
        self.error: str | None = None
        self._serve: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._ctx: WebContext | None = None

    def context(self) -> WebContext:
        ports = self.ports
        self._ctx = WebContext(
            settings=self.settings,
            readers=self.readers,
            tokens=self.tokens,
            live=self.live,
            status=ports.status,
            alert_engine=lambda: find_alert_engine(ports.find),
            run_in_store=ports.writer.call,
            writer=ports.writer.store,
            router=ports.decoder,
            notify=ports.committed.publish,
            config_dump=lambda: ports.config.model_dump(mode="json"),
        )
        return self._ctx

    async def start(self) -> None:
        settings = self.settings
        token = await asyncio.to_thread(self.tokens.ensure)
        if token is not None:
            show_new_token(token, self.token_path)
        try:
            sock = bind(settings.host, settings.port)
        except OSError as exc:
            self.error = f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            log.error("Web dashboard off: %s (set web.port, or web.enabled: false)", self.error)
            return
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.context()),
            log_config=None,
            access_log=settings.access_log,
            lifespan="off",
            server_header=False,
            proxy_headers=False,
            ws_ping_interval=settings.live_ping,
            ws_ping_timeout=settings.live_ping,
            ws_max_size=settings.max_request_bytes,
            ws_per_message_deflate=settings.live_deflate,
            h11_max_incomplete_event_size=settings.max_request_bytes,
            timeout_graceful_shutdown=3,
        )
        self.server = _EmbeddedServer(config)
        self._serve = asyncio.create_task(self.server.serve(sockets=[sock]), name="web-server")
        for _ in range(200):
            if self.server.started or self._serve.done():
                break
            await asyncio.sleep(0.025)
        self._serve.add_done_callback(self._served)
        self.ports.committed.subscribe(self.live.on_committed)
        self._watch = asyncio.create_task(self._subscribe_alerts(), name="web-alerts")
        lan = settings.host not in ("127.0.0.1", "::1", "localhost")
        shown = socket.gethostname() if settings.host in ("0.0.0.0", "::") else settings.host
        self.url = f"http://{shown}:{port}/"
        log.info(
            "Dashboard at %s (listening on %s:%d, %s; reading %s; API docs at /api/docs)",
            self.url, settings.host, port,
            "reachable from the LAN" if lan else "this machine only: web.host 0.0.0.0 opens it to the LAN",
            "open (web.public_read)" if settings.public_read else "needs the token",
        )  # fmt: skip

    async def _subscribe_alerts(self) -> None:
        """Alerts reach the live feed as soon as an engine exists (it may start after us)."""
        loop = asyncio.get_running_loop()
        while True:
            engine = find_alert_engine(self.ports.find)
            subscribe = getattr(engine, "subscribe", None)
            if callable(subscribe):

                def on_alert(transition: Any) -> None:
                    alert = getattr(transition, "alert", transition)
                    data = alert_dict(alert)
                    data["transition"] = getattr(transition, "kind", None)
                    loop.call_soon_threadsafe(self.live.publish_alert, data)

                subscribe(on_alert)
                return
            await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        self._stopping = True
        self.ports.committed.unsubscribe(self.live.on_committed)
        await self.live.close()
        if self.server is not None and self._serve is not None:
            self.server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._serve), 5)
            except TimeoutError:
                self.server.force_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._serve, 2)
        self.readers.close()

    def _served(self, task: asyncio.Task[None]) -> None:
        """The web server ended: expected while stopping, otherwise the dashboard is down."""
        if self._stopping or task.cancelled():
            return
        exc = task.exception()
        self.error = f"web server stopped: {exc!r}" if exc else "web server stopped"
        if exc is not None:
            log.error("Web dashboard stopped: %r (ingest goes on)", exc, exc_info=exc)
        else:
            log.error("Web dashboard stopped unexpectedly (ingest goes on)")

    def status(self) -> dict[str, Any]:
        port = None
        if self.server is not None and self.server.servers:
            sockets = self.server.servers[0].sockets
            port = sockets[0].getsockname()[1] if sockets else None
        auth = self._ctx.limiter.status() if self._ctx is not None else {}
        data: dict[str, Any] = {
            "url": self.url,
            "port": port,
            "host": self.settings.host,
            "public_read": self.settings.public_read,
            "error": self.error,
            "auth": auth,
            "live": self.live.status(),
        }
        problem = self.error or self.tokens.error
        if problem:
            data["health"] = {"status": "degraded", "reason": f"dashboard: {problem}"}
        return data


def build(ports: Ports) -> WebComponent | None:
    settings = getattr(ports.config, "web", None)
    if settings is None or not settings.enabled:
        return None
    return WebComponent(ports)
