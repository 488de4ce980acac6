"""The SQLite page reader used by `hub store recover`: vectors from real SQLite files, and
fuzzing (garbage never raises anything but PageError)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.store import pages

VALUES = [
    None, 0, 1, -1, 127, -128, 32767, 40000, -8_388_608, 2**31 - 1, 2**40, -(2**47), 2**63 - 1,
    -(2**63), 0.5, -3.25, 1e300, "", "pm2_5", "ü" * 50, b"", b"\x00\xff" * 40, "x" * 5000,
    b"y" * 70_000,
]  # fmt: skip


def test_varint_vectors() -> None:
    assert pages.varint(b"\x00", 0) == (0, 1)
    assert pages.varint(b"\x7f", 0) == (127, 1)
    assert pages.varint(b"\x81\x00", 0) == (128, 2)
    assert pages.varint(b"\xff" * 9, 0) == (-1, 9)


def test_every_row_of_a_real_file_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a)")  # a rowid table: values of every storage class
    conn.execute(
        "CREATE TABLE w (k INTEGER, ts INTEGER, v REAL, PRIMARY KEY (k, ts)) WITHOUT ROWID"
    )
    conn.executemany("INSERT INTO t VALUES (?)", [(v,) for v in VALUES])
    conn.executemany(
        "INSERT INTO w VALUES (?,?,?)", [(i % 7, i, i / 3) for i in range(20_000)]
    )  # many pages: interior index cells hold rows too
    conn.commit()
    expected_t = conn.execute("SELECT rowid, a FROM t").fetchall()
    expected_w = set(conn.execute("SELECT k, ts, v FROM w").fetchall())
    roots = dict(conn.execute("SELECT name, rootpage FROM sqlite_master WHERE type='table'"))
    conn.close()

    db = pages.open_database(path.read_bytes())
    seen: set[int] = set()
    leaves, damaged = db.walk(roots["t"], seen)
    assert not damaged
    got_t = [(rowid, values[0]) for leaf in leaves for rowid, values in db.leaf_rows(leaf)]
    assert sorted(got_t, key=lambda r: r[0]) == expected_t
    leaves, damaged = db.walk(roots["w"], seen)
    assert not damaged
    got_w = {tuple(values) for leaf in leaves for _, values in db.leaf_rows(leaf)}
    assert got_w == expected_w


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_records_raise_only_page_errors(data: bytes) -> None:
    with contextlib.suppress(pages.PageError, UnicodeDecodeError):
        pages.decode_record(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=4096, max_size=4096 * 3))
def test_garbage_pages_are_skipped_never_crash(data: bytes) -> None:
    db = pages.open_database(data, 4096)
    seen: set[int] = set()
    leaves, _ = db.walk(1, seen)
    for number in range(1, db.pages + 1):
        with contextlib.suppress(pages.PageError):
            list(db.leaf_rows(number))
    assert len(leaves) <= db.pages
