"""What the web app shares between requests (kept in `app.state.ctx`), and its dependencies."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub import __version__
from hub.web.auth import TokenStore
from hub.web.live import LiveFeed
from hub.web.reader import Readers
from hub.web.settings import WebSettings


@dataclass
class WebContext:
    settings: WebSettings
    readers: Readers
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


def get_ctx(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


Ctx = Annotated[WebContext, Depends(get_ctx)]

_bearer = HTTPBearer(
    auto_error=False,
    description="The hub's API token (shown once in the log on first run).",
)


def _presented(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is None or credentials.scheme.lower() != "bearer":
        return None
    return credentials.credentials


def require_token(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """For anything that changes state. A plain `def`: scrypt runs in the thread pool."""
    if not ctx.tokens.check(_presented(credentials)):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this needs the API token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def read_access(
    ctx: Ctx, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Reading is open unless `web.read_requires_token` is set."""
    if ctx.settings.read_requires_token:
        require_token(ctx, credentials)


Writer = Depends(require_token)
Reader = Depends(read_access)
