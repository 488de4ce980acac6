"""The InfluxDB outbox in PostgreSQL (schema version 6): the tables of hub.store.outbox and the
statement trigger that fills them. What the rows mean is said in hub.store.outbox; how they
stay right with several workers is said here and in hub.store.postgres_outbox.

The trigger: AFTER INSERT ... FOR EACH STATEMENT on `samples` with a transition table. It
sees exactly the rows the statement inserted: a redelivery that hit ON CONFLICT DO NOTHING is
not in it, so it queues nothing. One statement per batch (the store inserts a batch with one
INSERT ... SELECT), so the cost is one function call per batch, not per row
(bench/pg_outbox.py measured it against RETURNING and a row trigger).

Concurrency: every writer of the outbox (this trigger, the forwarder's deletes, backfill,
requeue, configure) first takes the transaction advisory lock LOCK_OUTBOX, held until its
commit. So outbox ids are handed out in commit order (a reader that saw id N has seen every
id below it that will ever exist: the forwarder's cursor never skips a late commit), and the
bound (max(id) - min(id) + 1 < max_rows) is checked against a backlog no other transaction is
changing. The trigger takes the lock only when queueing is on and the statement inserted rows.
"""

from __future__ import annotations

LOCK_OUTBOX = 0x6875_6260  # writers of the outbox, one transaction at a time
LOCK_FORWARDER = 0x6875_6261  # the one forwarder (session lock on its own connection)

OUTBOX_MIGRATION: tuple[str, ...] = (
    """CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        series_id BIGINT NOT NULL, ts BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE outbox_control (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        enabled BOOLEAN NOT NULL DEFAULT false,
        max_rows BIGINT NOT NULL DEFAULT 0,
        refused BIGINT NOT NULL DEFAULT 0,
        last_refused_ts BIGINT
    )""",
    # Dead points go with their dead letter (purged, or dropped by the dead letters' bound).
    """CREATE TABLE outbox_dead_points (
        dead_letter_id BIGINT NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
        series_id BIGINT NOT NULL, ts BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX outbox_dead_points_letter ON outbox_dead_points (dead_letter_id)",
    """CREATE TABLE outbox_gaps (
        series_id BIGINT NOT NULL, epoch BIGINT NOT NULL,
        first_ts BIGINT NOT NULL, last_ts BIGINT NOT NULL, cursor_ts BIGINT NOT NULL,
        points BIGINT NOT NULL, queued BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (series_id, epoch)
    )""",
    """CREATE TABLE outbox_marks (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch BIGINT NOT NULL DEFAULT 0,
        refused_seen BIGINT NOT NULL DEFAULT 0,
        queued_since BIGINT,
        last_delivery_ts BIGINT,
        delivered BIGINT NOT NULL DEFAULT 0,
        disabled_at BIGINT
    )""",
    "CREATE TABLE outbox_history (series_id BIGINT PRIMARY KEY, done_from BIGINT NOT NULL)",
    # Rows are queued in (ts, series, seq) order, the sample key: the first `room` of a batch
    # are queued, the rest refused, so within a batch a series' refused readings are its
    # newest and its range (per epoch, as in SQLite) never covers a queued reading.
    f"""CREATE FUNCTION outbox_queue() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        bound BIGINT;
        total BIGINT;
        room BIGINT;
        current_epoch BIGINT;
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM outbox_control WHERE id = 1 AND enabled) THEN
            RETURN NULL;
        END IF;
        SELECT count(*) INTO total FROM new_samples;
        IF total = 0 THEN
            RETURN NULL;
        END IF;
        PERFORM pg_advisory_xact_lock({LOCK_OUTBOX});
        -- Read again under the lock: configure() changes it under the same lock.
        SELECT max_rows INTO bound FROM outbox_control WHERE id = 1 AND enabled;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        SELECT greatest(bound - coalesce(max(id) - min(id) + 1, 0), 0) INTO room FROM outbox;
        IF room >= total THEN
            INSERT INTO outbox (series_id, ts, value)
            SELECT series_id, ts, value FROM new_samples ORDER BY ts, series_id, seq;
            RETURN NULL;
        END IF;
        INSERT INTO outbox (series_id, ts, value)
        SELECT series_id, ts, value FROM new_samples ORDER BY ts, series_id, seq LIMIT room;
        SELECT coalesce((SELECT epoch FROM outbox_marks WHERE id = 1), 0) INTO current_epoch;
        INSERT INTO outbox_gaps (series_id, epoch, first_ts, last_ts, cursor_ts, points)
        SELECT series_id, current_epoch, min(ts), max(ts), min(ts), count(*)
        FROM (SELECT series_id, ts FROM new_samples ORDER BY ts, series_id, seq OFFSET room) r
        GROUP BY series_id
        ON CONFLICT (series_id, epoch) DO UPDATE SET
            first_ts = least(outbox_gaps.first_ts, excluded.first_ts),
            last_ts = greatest(outbox_gaps.last_ts, excluded.last_ts),
            cursor_ts = least(outbox_gaps.cursor_ts, excluded.cursor_ts),
            points = outbox_gaps.points + excluded.points;
        UPDATE outbox_control SET refused = refused + (total - room),
            last_refused_ts = (SELECT max(ts) FROM (SELECT ts FROM new_samples
                ORDER BY ts, series_id, seq OFFSET room) r)
        WHERE id = 1;
        RETURN NULL;
    END
    $$""",
    """CREATE TRIGGER outbox_append AFTER INSERT ON samples
    REFERENCING NEW TABLE AS new_samples FOR EACH STATEMENT EXECUTE FUNCTION outbox_queue()""",
)
