"""The PostgreSQL store's schema, versioned like the SQLite one (hub.store.sqlite.MIGRATIONS).

The same concepts as the embedded store: a series catalog, samples keyed by
(series, ts, seq), rollups, events, devices, dead letters, ESPHome entities and MQTT
receipts. Two differences, both for several hub workers on one database:

- `samples` is range-partitioned by day on `ts` (ms since the epoch): retention drops whole
  partitions instead of deleting rows, and the newest day's index stays small.
- `mqtt_receipts` is keyed by (client, mid): packet ids are per MQTT session, and every
  worker has its own.
"""

from __future__ import annotations

from hub.store.postgres_outbox_schema import OUTBOX_MIGRATION

SCHEMA_VERSION = 6
DAY_MS = 86_400_000

# Version -> statements that bring a store of the version before to it, applied in order in
# one transaction each. Version 1 is the whole first schema.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE series (
            id BIGSERIAL PRIMARY KEY,
            device TEXT NOT NULL, metric TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '',
            unit TEXT, source TEXT,
            first_ts BIGINT, last_ts BIGINT, last_value DOUBLE PRECISION,
            UNIQUE (device, metric, tags)
        )""",
        "CREATE INDEX series_metric ON series (metric, device)",
        """CREATE TABLE samples (
            series_id BIGINT NOT NULL, ts BIGINT NOT NULL, seq INTEGER NOT NULL DEFAULT 0,
            value DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (series_id, ts, seq)
        ) PARTITION BY RANGE (ts)""",
        """CREATE TABLE rollup_1m (
            series_id BIGINT NOT NULL, bucket BIGINT NOT NULL,
            min DOUBLE PRECISION NOT NULL, max DOUBLE PRECISION NOT NULL,
            sum DOUBLE PRECISION NOT NULL, count BIGINT NOT NULL,
            PRIMARY KEY (series_id, bucket)
        )""",
        """CREATE TABLE rollup_1h (
            series_id BIGINT NOT NULL, bucket BIGINT NOT NULL,
            min DOUBLE PRECISION NOT NULL, max DOUBLE PRECISION NOT NULL,
            sum DOUBLE PRECISION NOT NULL, count BIGINT NOT NULL,
            PRIMARY KEY (series_id, bucket)
        )""",
        "CREATE TABLE rollup_dirty (series_id BIGINT PRIMARY KEY, from_ts BIGINT NOT NULL)",
        """CREATE TABLE events (
            id BIGSERIAL PRIMARY KEY,
            device TEXT NOT NULL, name TEXT NOT NULL, text TEXT NOT NULL,
            ts BIGINT NOT NULL, source TEXT, seq INTEGER NOT NULL DEFAULT 0,
            UNIQUE (device, name, ts, seq)
        )""",
        """CREATE TABLE devices (
            name TEXT PRIMARY KEY, source TEXT, kind TEXT,
            manufacturer TEXT, model TEXT, sw_version TEXT, identifiers TEXT,
            first_seen BIGINT, last_seen BIGINT, online INTEGER, availability_ts BIGINT
        )""",
        """CREATE TABLE dead_letters (
            id BIGSERIAL PRIMARY KEY,
            received_ts BIGINT NOT NULL, source TEXT NOT NULL, topic TEXT,
            reason TEXT NOT NULL, detail TEXT NOT NULL, payload BYTEA,
            replayed_ts BIGINT, payload_bytes INTEGER, payload_sha256 TEXT
        )""",
        "CREATE INDEX dead_letters_reason ON dead_letters (reason, id)",
        "CREATE INDEX dead_letters_digest ON dead_letters (payload_sha256)",
        """CREATE TABLE esphome_entities (
            state_topic TEXT PRIMARY KEY, config_topic TEXT NOT NULL, entity TEXT NOT NULL
        )""",
        """CREATE TABLE mqtt_receipts (
            client TEXT NOT NULL, mid INTEGER NOT NULL, digest BIGINT NOT NULL,
            received_ts BIGINT NOT NULL, seq INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (client, mid)
        )""",
    ),
    2: (
        # The records `hub store migrate-to` brings from a SQLite store: drive sessions and
        # the alert history (the columns of hub.store.sessions and hub.alerts.store).
        """CREATE TABLE rc_sessions (
            id TEXT PRIMARY KEY, vehicle TEXT NOT NULL, device TEXT NOT NULL,
            start_ms BIGINT NOT NULL, end_ms BIGINT NOT NULL,
            max_speed_kmh DOUBLE PRECISION, max_current_a DOUBLE PRECISION,
            min_cell_voltage_load DOUBLE PRECISION, peak_esc_temperature DOUBLE PRECISION,
            peak_motor_temperature DOUBLE PRECISION, peak_pack_temperature DOUBLE PRECISION,
            consumed_mah DOUBLE PRECISION, energy_wh DOUBLE PRECISION, distance_km DOUBLE PRECISION
        )""",
        "CREATE INDEX rc_sessions_vehicle_start ON rc_sessions (vehicle, start_ms)",
        """CREATE TABLE alerts (
            id BIGSERIAL PRIMARY KEY,
            rule TEXT NOT NULL, device TEXT NOT NULL, metric TEXT, severity TEXT NOT NULL,
            state TEXT NOT NULL, value DOUBLE PRECISION, threshold DOUBLE PRECISION, unit TEXT,
            message TEXT NOT NULL, device_class TEXT NOT NULL,
            started_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL, resolved_ms BIGINT,
            acknowledged_by TEXT, acknowledged_ms BIGINT, silenced_until_ms BIGINT,
            count BIGINT NOT NULL
        )""",
        "CREATE UNIQUE INDEX alerts_one_firing ON alerts (rule, device) WHERE state = 'firing'",
        "CREATE INDEX alerts_started ON alerts (started_ms)",
        """CREATE TABLE alert_events (
            id BIGSERIAL PRIMARY KEY, alert_id BIGINT NOT NULL, ts BIGINT NOT NULL,
            kind TEXT NOT NULL, value DOUBLE PRECISION, detail TEXT
        )""",
        "CREATE INDEX alert_events_alert ON alert_events (alert_id, ts)",
        """CREATE TABLE alert_silences (
            rule TEXT NOT NULL, device TEXT NOT NULL, until_ms BIGINT NOT NULL, by TEXT,
            PRIMARY KEY (rule, device)
        )""",
    ),
    3: (
        # Worker slots: each worker (MQTT client id) gets a number once, kept across restarts;
        # its readings stamped on receipt take `seq` values from slot << SLOT_BITS on, so two
        # workers stamping one device in the same millisecond never share a sample key.
        "CREATE TABLE workers (client TEXT PRIMARY KEY, slot SERIAL UNIQUE)",
    ),
    4: (),  # reserved for branch pg-read
    5: (
        # The change feed (hub.store.postgres_feed): one row per committed ingest batch,
        # written in the batch's own transaction, so a row exists iff the batch committed.
        # The leader reads rows whose writing transaction ended (xid below the snapshot's
        # xmin) from its cursor on; `term` fences a leader that lost the lock.
        """CREATE TABLE feed (
            id BIGSERIAL PRIMARY KEY,
            xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
            payload BYTEA NOT NULL
        )""",
        "CREATE INDEX feed_xid ON feed (xid)",
        """CREATE TABLE feed_cursor (
            name TEXT PRIMARY KEY, horizon xid8 NOT NULL, term BIGINT NOT NULL DEFAULT 0,
            holder TEXT, updated_ms BIGINT
        )""",
        "INSERT INTO feed_cursor (name, horizon) VALUES ('leader', '0')",
        # `hub alerts ack|silence|test` requests, applied by the leader's engine on its tick.
        """CREATE TABLE alert_commands (
            id BIGSERIAL PRIMARY KEY,
            created_ms BIGINT NOT NULL, command TEXT NOT NULL, target TEXT NOT NULL,
            by TEXT, until_ms BIGINT, applied_ms BIGINT, result TEXT
        )""",
        "CREATE INDEX alerts_device ON alerts (device, started_ms)",
    ),
    # The InfluxDB outbox (branch pg-influx): the tables of hub.store.outbox, filled by a
    # statement trigger on samples in the transaction that stores them (hub.store.postgres_outbox).
    6: OUTBOX_MIGRATION,
}
SLOT_BITS = 20  # readings of one topic within one millisecond per worker: 2**20
MAX_SLOT = (2**31 - 1) >> SLOT_BITS  # seq is a 32-bit INTEGER


def partition_name(day_start_ms: int) -> str:
    return f"samples_d{day_start_ms // DAY_MS}"
