"""What the web app shares between requests (kept in `app.state.ctx`), and its dependencies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from hub import __version__
from hub.web.auth import FailureLimiter, TokenStore
from hub.web.live import LiveFeed
from hub.web.reader import ReaderPool
from hub.web.settings import WebSettings


@dataclass
class WebContext:
    settings: WebSettings
    readers: ReaderPool
    tokens: TokenStore
    live: LiveFeed = field(default_factory=LiveFeed)
    # Hub.status(): the same dict `hub status --json` shows.
    status: Callable[[], dict[str, Any]] = dict
    # The alert engine, looked up per request: it may start after the web app.
    alert_engine: Callable[[], Any | None] = lambda: None
    # IngestCore.call: runs a function in the store thread (the only writer).
    run_in_store: Callable[..., Awaitable[Any]] | None = None
    writer: Any | None = None  # the writer Store, only ever used inside run_in_store
    router: Any | None = None  # the ingest Router (store thread only), for replays
    notify: Callable[[Any], None] | None = None  # IngestCore.notify, after a replay commits
    config_dump: Callable[[], dict[str, Any]] | None = None
    version: str = __version__
    started_at: float = field(default_factory=time.time)
    # Wrong tokens per client address (web.auth_failures within web.auth_window).
    limiter: FailureLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = FailureLimiter(self.settings.auth_failures, self.settings.auth_window)


def get_ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


Ctx = Annotated[WebContext, Depends(get_ctx)]

_bearer = HTTPBearer(
    auto_error=False,
    description="The hub's API token (shown once on the terminal when the hub made it).",
)

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _presented(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is None or credentials.scheme.lower() != "bearer":
        return None
    return credentials.credentials


def client_address(connection: HTTPConnection) -> str:
    # The peer of the TCP connection (proxy headers are not trusted: proxy_headers is off).
    return connection.client.host if connection.client is not None else "unknown"


async def check_token(ctx: WebContext, connection: HTTPConnection, presented: str | None) -> None:
    """Raise 429 for an address over the wrong-token limit, 401 for a missing or wrong token.

    Runs on the event loop: the check is one SHA-256 (microseconds), so it needs no thread.
    Only a token file of an earlier version (scrypt) is checked in a thread, once.
    """
    address = client_address(connection)
    limiter = ctx.limiter
    wait = limiter.retry_after(address)
    if wait:
        limiter.refuse()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many wrong API tokens from {address}: try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    if ctx.tokens.legacy:
        ok = await asyncio.to_thread(ctx.tokens.check, presented)
    else:
        ok = ctx.tokens.check(presented)
    if ok:
        return
    if presented:
        limiter.failed(address)
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "this needs the API token: send 'Authorization: Bearer <token>'",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def require_token(ctx: Ctx, request: Request, credentials: Credentials) -> None:
    """For anything that changes state or shows raw payloads or the configuration."""
    await check_token(ctx, request, _presented(credentials))


async def read_access(ctx: Ctx, request: Request, credentials: Credentials) -> None:
    """The overview: open when `web.public_read` is on, the token otherwise."""
    if not ctx.settings.public_read:
        await check_token(ctx, request, _presented(credentials))


Writer = Depends(require_token)  # changes state
Private = Depends(require_token)  # reads raw payloads or the configuration: always the token
Reader = Depends(read_access)  # reads the overview
