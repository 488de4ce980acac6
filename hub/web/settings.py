"""The `web:` section: where the dashboard and REST API listen, and who may do what."""

from __future__ import annotations

from pydantic import Field

from hub.config.base import ByteSize, ConfigModel, Duration


class WebSettings(ConfigModel):
    """Web dashboard, REST API and live feed, served by `hub run`."""

    enabled: bool = Field(True, description="Serve the dashboard and the REST API.")
    host: str = Field(
        "0.0.0.0",
        description="Address to listen on: 0.0.0.0 for the LAN, 127.0.0.1 for this machine only.",
    )
    port: int = Field(8090, ge=0, le=65535, description="TCP port (0 picks a free one).")
    read_requires_token: bool = Field(
        False,
        description="Require the API token for reading too (reading is open on the LAN otherwise).",
    )
    token_file: str = Field(
        "web_token.json",
        description="Where the API token's hash is kept (relative to data_dir). Delete it to "
        "get a new token (shown in the log) on the next start.",
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
