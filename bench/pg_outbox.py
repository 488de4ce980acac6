"""What queueing samples for InfluxDB costs a PostgreSQL insert, by how it is done
(hub.store.postgres_outbox_schema uses the statement trigger):

    none        no outbox (the trigger dropped): the ceiling
    off         the statement trigger installed, queueing switched off (outbox_control)
    trigger     AFTER INSERT ... FOR EACH STATEMENT with a transition table (the store's)
    returning   no trigger: INSERT ... ON CONFLICT DO NOTHING RETURNING in a CTE whose rows
                a function queues (the same bound logic, one statement, no round trip)
    row         FOR EACH ROW trigger (what SQLite does), the bound checked per row

Batches are written the way the store writes them (COPY into a temporary table then one
INSERT ... SELECT from 1,000 rows, one INSERT ... SELECT FROM unnest below), one commit each.
Then the outbox's size on disk per queued row (for postgres_outbox.BYTES_PER_ROW).

    .venv/bin/python bench/pg_outbox.py postgresql://user@host:port/db [--rows 200000]

Printed, not asserted. The database's samples and outbox are emptied.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.store import postgres_outbox
from hub.store.postgres import PostgresStore
from hub.store.postgres_outbox_schema import LOCK_OUTBOX
from hub.store.postgres_schema import DAY_MS

Rows = list[tuple[int, int, int, float]]
Conn = psycopg.Connection[Any]

# The trigger's body over arrays, for the RETURNING variant.
QUEUE_ROWS = f"""
CREATE OR REPLACE FUNCTION bench_queue(sids BIGINT[], tss BIGINT[], seqs INT[], vals FLOAT8[])
RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE bound BIGINT; total BIGINT; room BIGINT;
BEGIN
    total := coalesce(cardinality(sids), 0);
    IF total = 0 OR NOT EXISTS (SELECT 1 FROM outbox_control WHERE id = 1 AND enabled) THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock({LOCK_OUTBOX});
    SELECT max_rows INTO bound FROM outbox_control WHERE id = 1;
    SELECT greatest(bound - coalesce(max(id) - min(id) + 1, 0), 0) INTO room FROM outbox;
    INSERT INTO outbox (series_id, ts, value)
    SELECT s, t, v FROM unnest(sids, tss, seqs, vals) AS u(s, t, q, v) ORDER BY t, s, q LIMIT room;
END $$"""

ROW_TRIGGER = f"""
CREATE OR REPLACE FUNCTION bench_row() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE bound BIGINT;
BEGIN
    SELECT max_rows INTO bound FROM outbox_control WHERE id = 1 AND enabled;
    IF NOT FOUND THEN RETURN NULL; END IF;
    PERFORM pg_advisory_xact_lock({LOCK_OUTBOX});
    IF (SELECT coalesce(max(id) - min(id) + 1, 0) FROM outbox) < bound THEN
        INSERT INTO outbox (series_id, ts, value) VALUES (NEW.series_id, NEW.ts, NEW.value);
    END IF;
    RETURN NULL;
END $$"""


def write(conn: Conn, rows: Rows, returning: bool) -> None:
    if len(rows) >= 1000:
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS samples_in (series_id BIGINT, ts BIGINT, seq INT, "
            "value FLOAT8) ON COMMIT DELETE ROWS"
        )
        with conn.cursor() as cur, cur.copy("COPY samples_in FROM STDIN") as out:
            for row in rows:
                out.write_row(row)
        source, args = "SELECT * FROM samples_in", ()
    else:
        source = "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::int[], %s::float8[])"
        args = tuple([r[i] for r in rows] for i in range(4))  # type: ignore[assignment]
    insert = f"INSERT INTO samples (series_id, ts, seq, value) {source} ON CONFLICT DO NOTHING"
    if returning:
        conn.execute(
            f"WITH ins AS ({insert} RETURNING series_id, ts, seq, value) SELECT bench_queue("
            "array_agg(series_id), array_agg(ts), array_agg(seq), array_agg(value)) FROM ins",
            args,
        )
    else:
        conn.execute(insert, args)


def setup(conn: Conn, variant: str) -> None:
    conn.execute("DROP TRIGGER IF EXISTS outbox_append ON samples")
    conn.execute("DROP TRIGGER IF EXISTS bench_row ON samples")
    if variant in ("off", "trigger"):
        conn.execute(
            "CREATE TRIGGER outbox_append AFTER INSERT ON samples REFERENCING NEW TABLE AS "
            "new_samples FOR EACH STATEMENT EXECUTE FUNCTION outbox_queue()"
        )
    if variant == "row":
        conn.execute(
            "CREATE TRIGGER bench_row AFTER INSERT ON samples FOR EACH ROW EXECUTE FUNCTION bench_row()"
        )
    with conn.transaction():
        postgres_outbox.configure(conn, variant != "off", 100_000_000)


def restore(conn: Conn) -> None:
    setup(conn, "off")  # the store's own trigger back in place


def run(url: str, rows: Rows, batch: int, repeat: int) -> dict[str, float]:
    variants = ("none", "off", "trigger", "returning", "row")
    results: dict[str, list[float]] = {v: [] for v in variants}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(QUEUE_ROWS)
        conn.execute(ROW_TRIGGER)
        for _ in range(repeat):
            for variant in variants:
                setup(conn, variant)
                conn.execute("TRUNCATE samples, outbox")
                started = time.perf_counter()
                for start in range(0, len(rows), batch):
                    with conn.transaction():
                        write(conn, rows[start : start + batch], variant == "returning")
                results[variant].append(len(rows) / (time.perf_counter() - started))
                queued = conn.execute("SELECT count(*) FROM outbox").fetchone()
                expect = 0 if variant in ("none", "off") else len(rows)
                assert queued is not None and queued[0] == expect, (variant, queued)
        restore(conn)
        conn.execute("TRUNCATE samples, outbox")
    return {v: statistics.median(r) for v, r in results.items()}


def bytes_per_row(url: str, count: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE outbox")
        conn.execute(
            "INSERT INTO outbox (series_id, ts, value) "
            "SELECT i %% 50, 1763800000000 + i, i * 0.5 FROM generate_series(1, %s) i",
            (count,),
        )
        conn.execute("VACUUM ANALYZE outbox")
        row = conn.execute("SELECT pg_total_relation_size('outbox')").fetchone()
        conn.execute("TRUNCATE outbox")
    assert row is not None
    return float(row[0]) / count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    store = PostgresStore(args.url)  # the schema, with the outbox
    t0 = int(time.time() * 1000) // DAY_MS * DAY_MS
    store.create_partitions_ahead(t0, 1)
    store.close()
    rows = [(i % 50, t0 + i, 0, float(i)) for i in range(args.rows)]
    show: Callable[[float], str] = lambda r: f"{r:>10,.0f}"  # noqa: E731
    for batch in (2000, 50):
        medians = run(args.url, rows, batch, args.repeat)
        base = medians["none"]
        print(f"batches of {batch} ({args.rows:,} rows, median of {args.repeat}):")
        for variant, rate in medians.items():
            print(f"  {variant:10} {show(rate)} rows/s  {rate / base:5.2f} of none")
    print(f"outbox on disk: {bytes_per_row(args.url, 1_000_000):.1f} bytes per queued row")


if __name__ == "__main__":
    main()
