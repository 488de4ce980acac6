"""How a batch of samples is fastest written to PostgreSQL with psycopg 3 (the choice in
hub.store.postgres): one INSERT ... SELECT FROM unnest(arrays), pipelined executemany, or
COPY into a temporary table then INSERT ... ON CONFLICT DO NOTHING (COPY itself cannot skip
redeliveries). Each method writes the same rows into an emptied store, in batches.

    .venv/bin/python bench/pg_insert.py postgresql://user@host:port/db [--rows 200000] [--batch 2000]

Printed, not asserted. The database's tables are emptied.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.store.postgres import PostgresStore
from hub.store.postgres_schema import DAY_MS

Rows = list[tuple[int, int, int, float]]


def unnest(conn: psycopg.Connection, rows: Rows) -> None:
    conn.execute(
        "INSERT INTO samples (series_id, ts, seq, value) SELECT * FROM "
        "unnest(%s::bigint[], %s::bigint[], %s::int[], %s::float8[]) ON CONFLICT DO NOTHING",
        ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]),
    )


def executemany(conn: psycopg.Connection, rows: Rows) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO samples (series_id, ts, seq, value) VALUES (%s,%s,%s,%s) "
            "ON CONFLICT DO NOTHING",
            rows,
        )


def copy(conn: psycopg.Connection, rows: Rows) -> None:
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS samples_in (series_id BIGINT, ts BIGINT, seq INT, "
        "value FLOAT8) ON COMMIT DELETE ROWS"
    )
    with conn.cursor() as cur, cur.copy("COPY samples_in FROM STDIN") as out:
        for row in rows:
            out.write_row(row)
    conn.execute("INSERT INTO samples SELECT * FROM samples_in ON CONFLICT DO NOTHING")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    store = PostgresStore(args.url)
    t0 = int(time.time() * 1000) // DAY_MS * DAY_MS
    store.create_partitions_ahead(t0, 1)
    store.close()
    rows = [(i % 50, t0 + i, 0, float(i)) for i in range(args.rows)]
    results: dict[str, list[float]] = {"unnest": [], "executemany": [], "copy": []}
    methods = {"unnest": unnest, "executemany": executemany, "copy": copy}
    with psycopg.connect(args.url) as conn:
        for _ in range(args.repeat):
            for name, method in methods.items():
                conn.execute("TRUNCATE samples")
                conn.commit()
                started = time.perf_counter()
                for start in range(0, len(rows), args.batch):
                    method(conn, rows[start : start + args.batch])
                    conn.commit()
                results[name].append(len(rows) / (time.perf_counter() - started))
        conn.execute("TRUNCATE samples")
        conn.commit()
    for name, rates in results.items():
        print(
            f"{name:12} {statistics.median(rates):10,.0f} rows/s (median of "
            f"{', '.join(f'{r:,.0f}' for r in rates)}; batches of {args.batch}, one commit each)"
        )


if __name__ == "__main__":
    main()
