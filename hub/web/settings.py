"""The `web:` section: where the dashboard and REST API listen, and who may do what."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from hub.config.base import ByteSize, ConfigModel, Duration


class WebSettings(ConfigModel):
    """Web dashboard, REST API and live feed, served by `hub run`."""

    enabled: bool = Field(True, description="Serve the dashboard and the REST API.")
    host: str = Field(
        "127.0.0.1",
        description="Address to listen on: 127.0.0.1 for this machine only (default), 0.0.0.0 "
        "for the LAN (every machine that can reach this one).",
    )
    port: int = Field(8090, ge=0, le=65535, description="TCP port (0 picks a free one).")
    public_read: bool = Field(
        False,
        description="Let anyone who can reach the dashboard read the overview (devices, latest "
        "values, charts, alerts, sessions, live feed, /metrics) without the token. Dead letters "
        "(raw payloads) and the configuration always need the token.",
    )
    token_file: str = Field(
        "web_token.json",
        description="Where the API token's SHA-256 digest is kept (relative to data_dir). "
        "'hub web token --reset' makes a new token.",
    )
    auth_failures: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Wrong tokens one client address may send within auth_window; after "
        "that it gets 429 until the window has passed.",
    )
    auth_window: Duration = Field(
        60.0, description="Window over which wrong tokens are counted per client address."
    )
    max_concurrent_requests: int = Field(
        64,
        ge=1,
        le=10_000,
        description="HTTP requests served at once; more get 503 with Retry-After at once "
        "(live-feed WebSockets are bounded by live_max_clients instead).",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (CORS). Empty: CORS off.",
    )
    max_request_bytes: ByteSize = Field(
        65536, ge=1024, description="Largest request body accepted (larger ones get 413)."
    )
    max_points: int = Field(
        5000, ge=10, le=100_000, description="Most points one query may ask for per series."
    )
    live_coalesce: Duration = Field(
        0.1,
        description="Readings committed within this window reach a live client as one message (0: one per commit).",
    )
    live_queue: int = Field(
        256,
        ge=4,
        le=100_000,
        description="Messages a live-feed client may fall behind before it is dropped.",
    )
    live_deflate: bool = Field(
        False,
        description="Compress live-feed messages (permessage-deflate) for clients that offer it: saves bandwidth, costs the hub CPU for every client and message.",
    )
    live_max_clients: int = Field(
        200, ge=1, le=10_000, description="Most live-feed WebSocket clients at once."
    )
    live_ping: Duration = Field(
        20.0, description="WebSocket ping interval (dead clients are noticed and dropped)."
    )
    access_log: bool = Field(
        False, description="Log every HTTP request (the token is never logged either way)."
    )

    @model_validator(mode="before")
    @classmethod
    def read_requires_token_was_replaced(cls, data: Any) -> Any:
        if isinstance(data, dict) and "read_requires_token" in data:
            raise ValueError(
                "web.read_requires_token was replaced by web.public_read: reading now needs the "
                "token unless public_read is true; remove read_requires_token (and set "
                "public_read: true only if the overview should be readable without the token)"
            )
        return data
