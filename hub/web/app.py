"""The web app: REST API, live feed and the dashboard's static files, from one factory.

`create_app(ctx)` builds a FastAPI app around a `WebContext` (kept in `app.state.ctx`), so a
test or a bench can serve the same app over a store of its own. Every error is JSON
(`{"error": "...", "detail": ...}`); request bodies are limited in size; CORS is off unless
origins are configured; the dashboard is plain files (ES modules, no build step).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.store.reader import StoreUnavailable
from hub.web.context import WebContext
from hub.web.docs import install_docs
from hub.web.params import reject_unknown_query_parameters
from hub.web.routes import alerts, dead_letters, devices, health, live, metrics, query, sessions

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
_CDN = "https://cdn.jsdelivr.net"
_DOCS_CSP = (
    f"default-src 'none'; script-src {_CDN} {{hashes}}; style-src {_CDN} 'unsafe-inline'; "
    "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, by header or by counting."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await _too_large(self.limit, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(self.limit, send)


class _TooLarge(Exception):
    pass


async def _too_large(limit: int, send: Send) -> None:
    body = JSONResponse(
        {"error": f"request body too large (limit {limit} bytes, web.max_request_bytes)"}, 413
    )
    await send({"type": "http.response.start", "status": 413, "headers": body.raw_headers})
    await send({"type": "http.response.body", "body": body.body})


class ConcurrencyLimit:
    """At most `limit` HTTP requests in the app at once; the next ones get 503 at once.

    Refusing costs nothing, while queueing would let a flood pile up memory and time (each
    waiting request holds its connection and its buffers). WebSockets are not counted: the
    live feed bounds its own clients (web.live_max_clients).
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning(
                    "%d HTTP requests at once: refusing more with 503 (web.max_concurrent_requests;"
                    " %d refused so far)",
                    self.limit,
                    self.refused,
                )
            body = JSONResponse(
                {
                    "error": f"the hub is serving {self.limit} requests already: retry in a "
                    "second (web.max_concurrent_requests)"
                },
                503,
                headers={"Retry-After": "1"},
            )
            await body(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class SecurityHeaders:
    """nosniff, no framing, no referrer, and a CSP: the dashboard runs its own files only.

    The API docs page (FastAPI's Swagger UI) loads its script from a CDN and starts it with an
    inline script: its CSP allows that CDN and exactly that inline script (by its hash, taken
    from the page as served), nothing else.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    *message.get("headers", []),
                    *_HEADERS,
                    (b"content-security-policy", _CSP.encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _error(status: int, message: str, detail: Any = None, headers: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status, headers=headers)


def create_app(ctx: WebContext) -> FastAPI:
    app = FastAPI(
        title="Telemetry hub",
        version=ctx.version,
        description=(
            "REST API of the home-lab telemetry hub: devices, the metric catalog, downsampled "
            "queries, latest values, alerts, RC drive sessions, dead letters, health and "
            "Prometheus metrics. Everything but `/api/health` needs the API token as "
            "`Authorization: Bearer <token>`, except that `web.public_read` opens the overview "
            "(devices, latest values, queries, alerts, sessions, metrics, live feed) for reading. "
            "Dead letters and the configuration always need the token. Wrong tokens are limited "
            "per client address (429 with Retry-After). Live readings: WebSocket `/api/live`."
        ),
        docs_url=None,  # hub.web.docs serves a page that needs no CDN
        redoc_url=None,
        openapi_url="/api/openapi.json",
        dependencies=[Depends(reject_unknown_query_parameters)],
    )
    app.state.ctx = ctx

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and exc.detail == "Not Found":
            message = f"nothing at {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return _error(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"where": "request", "problem": "invalid"}
        return _error(422, f"invalid request: {first['where']}: {first['problem']}", details)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        # A PostgreSQL server that is down or restarting: say so, the next request retries.
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _error(503, f"store unavailable: {exc}", headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, "internal error (logged by the hub)")

    for module in (devices, metrics, query, alerts, sessions, dead_letters, health, live):
        app.include_router(module.router)
    install_docs(app)
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="dashboard")

    if ctx.settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=ctx.settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, limit=ctx.settings.max_request_bytes)
    # Outermost, so a refused request costs no other middleware either.
    app.add_middleware(ConcurrencyLimit, limit=ctx.settings.max_concurrent_requests)
    return app
