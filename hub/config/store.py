"""The `store:` section: the embedded SQLite time-series store."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hub.config.base import ByteSize, ConfigModel, Duration


class RetentionConfig(ConfigModel):
    """How long each resolution is kept (0 = forever)."""

    raw: Duration = Field(30 * 86400.0, description="Raw samples.")
    minute: Duration = Field(365 * 86400.0, description="1-minute rollups (min/max/mean/count).")
    hour: Duration = Field(0.0, description="1-hour rollups; 0 keeps them forever.")


class DeadLettersConfig(ConfigModel):
    """Bounds on what refused messages may take on disk: any publisher can send them."""

    max_payload: ByteSize = Field(
        65536,
        ge=0,
        description="Payloads larger than this keep only their first bytes, with the full length and SHA-256 (such a letter cannot be replayed).",
    )
    max_bytes: ByteSize = Field(
        64 * 1024 * 1024,
        ge=0,
        description="All kept payloads together; past it the oldest dead letters are dropped (counted in `hub status`).",
    )
    retention: Duration = Field(
        30 * 86400.0, description="Dead letters older than this are deleted; 0 keeps them."
    )


class StoreConfig(ConfigModel):
    """SQLite in WAL mode; one file holds samples, rollups, events, dead letters and the outbox."""

    path: str = Field("hub.db", description="Database file, relative to data_dir unless absolute.")
    url: str | None = Field(
        None,
        description="postgresql://user@host:port/db to keep the store in PostgreSQL instead of the SQLite file (for `hub run --worker`: several workers, one database; see docs/scaling.md). Empty = SQLite at `path`. A password is better given as PGPASSWORD or in ~/.pgpass than here.",
    )
    synchronous: Literal["normal", "full"] = Field(
        "normal",
        description="normal: commits survive a crash or kill of the hub (WAL, as Home Assistant's recorder does); full: also a power cut, at one fsync per batch (measured here: publish-to-commit p99 327 ms instead of 23 ms at 5,000 msgs/s).",
    )
    rollup_interval: Duration = Field(
        30.0, description="How often closed minutes and hours are rolled up."
    )
    maintenance_interval: Duration = Field(
        3600.0, description="How often retention deletes old data."
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig, description="Retention per resolution."
    )
    min_free: ByteSize = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Low-disk guard: below this much free space where the store lives, commits pause (nothing is acknowledged, health says why) until space is freed; 0 turns the guard off.",
    )
    busy_timeout: Duration = Field(
        10.0,
        ge=0.1,
        le=600,
        description="How long one commit waits for another process's lock on the store (a backup, the sqlite3 shell) before it is retried; the hub keeps retrying and says so in health.",
    )
    check_timeout: Duration = Field(
        10.0,
        ge=0,
        description="At start, the quick integrity check stops after this long on a large store (then run 'hub store check'); 0 checks without a limit.",
    )
    dead_letters: DeadLettersConfig = Field(
        default_factory=DeadLettersConfig, description="Bounds on dead letters."
    )
