"""Checking and recovering a damaged store (`hub store check`, `hub store recover`).

The check is SQLite's own `PRAGMA integrity_check`. Recovery reads the damaged file page by
page (hub.store.pages) and copies every row it can still read into a new store with the current
schema; the damaged file is kept beside it. (The `sqlite3` shell's `.recover` would be the tool
of choice, but Debian's build lacks the sqlite_dbpage table it needs and fails with "SQL logic
error".) Reading pages directly also gets past a garbage 100-byte header, which keeps SQLite
from opening the file at all.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import struct
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hub.store import pages

log = logging.getLogger(__name__)

MAGIC = b"SQLite format 3\x00"
HEADER_BYTES = 100


class RecoveryError(Exception):
    """Recovery could not produce a sound store; the message says why."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    problems: list[str]
    readable: bool  # False: SQLite cannot open the file at all


@dataclass(frozen=True, slots=True)
class RecoverResult:
    recovered: Path
    kept_damaged: Path
    samples: int
    series: int
    problems_after: list[str]


def check(path: Path) -> CheckResult:
    """The full integrity check, read-only."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        return CheckResult(False, [str(exc)], False)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return CheckResult(False, [str(exc)], False)
    finally:
        conn.close()
    problems = [line for r in rows for line in str(r[0]).splitlines() if line.strip()]
    problems = [line for line in problems if not line.startswith("***")]
    if problems == ["ok"]:
        return CheckResult(True, [], True)
    return CheckResult(False, problems, True)


def _guess_page_size(path: Path) -> int:
    """The header's page size if it is plausible, else SQLite's default."""
    with path.open("rb") as f:
        head = f.read(HEADER_BYTES)
    if len(head) >= 18:
        (value,) = struct.unpack_from(">H", head, 16)
        size = 65536 if value == 1 else value
        if 512 <= size <= 65536 and size & (size - 1) == 0:
            return size
    return 4096


def recover(path: Path, output: Path | None = None) -> RecoverResult:
    """Recover what is intact in `path` into a new store and put it in place.

    The new file gets the current schema (an empty store). Every table's rows are then read
    page by page (hub.store.pages): each b-tree is walked from its root, pages that do not
    parse are skipped, and leaf pages cut off from their tree by a damaged parent are given to
    the one damaged table whose columns their rows fit. Freelist pages (deleted rows) are never
    read. The damaged file (and its -wal) is renamed to `<name>.damaged-<time>`; the recovered
    one takes its name. Raises RecoveryError when no sound store came out.
    """
    from hub.store.sqlite import Store  # the schema's one owner

    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = output or path.with_name(f"{path.name}.recovered-{stamp}")
    if target.exists():
        raise RecoveryError(f"{target} exists already; move it away first")
    wal = Path(str(path) + "-wal")
    with tempfile.TemporaryDirectory(prefix="hub-recover-", dir=path.parent) as work:
        source = Path(work) / "source.db"
        shutil.copyfile(path, source)
        if wal.exists() and wal.stat().st_size:
            # Fold committed WAL frames into the copy first, when SQLite can still open it.
            shutil.copyfile(wal, Path(str(source) + "-wal"))
            try:
                conn = sqlite3.connect(source)
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.close()
            except sqlite3.DatabaseError:
                log.warning("The WAL of %s could not be applied; recovering the main file", path)
        data = source.read_bytes()
    db = pages.open_database(data, _guess_page_size(path))
    Store(target, "normal").close()
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        copied = _copy_all(db, dst)
        problems = [str(r[0]) for r in dst.execute("PRAGMA integrity_check")]
        samples, series = _count(dst, "samples"), _count(dst, "series")
    finally:
        dst.close()
    if problems != ["ok"]:
        target.unlink(missing_ok=True)
        raise RecoveryError(f"the recovered store still has problems: {'; '.join(problems[:3])}")
    log.info("Recovered rows per table: %s", copied)
    kept = path
    if output is None:
        kept = path.with_name(f"{path.name}.damaged-{stamp}")
        path.rename(kept)
        for suffix in ("-wal", "-shm"):
            side = Path(str(path) + suffix)
            if side.exists():
                side.rename(Path(str(kept) + suffix))
        target.rename(path)
        target = path
    target.chmod(0o600)
    return RecoverResult(target, kept, samples, series, [])


@dataclass
class _Object:
    name: str
    table: str
    kind: str  # table | index
    root: int
    columns: list[str]  # in record order
    affinities: list[str]
    rowid: bool  # a rowid table (its leaves are table leaves)
    leaves: list[int]
    damaged: bool


def _schema(db: pages.Database) -> list[_Object]:
    """Tables and indexes from the damaged file's own sqlite_master (page 1's tree)."""
    seen: set[int] = set()
    leaves, _ = db.walk(1, seen)
    mem = sqlite3.connect(":memory:")
    out: list[_Object] = []
    rows = [values for leaf in leaves for _, values in db.leaf_rows(leaf)]
    for values in rows:
        if len(values) < 5 or values[0] not in ("table", "index"):
            continue
        kind, name, table, root, sql = values[:5]
        if not isinstance(root, int) or not root or not isinstance(sql, str):
            continue
        if not isinstance(name, str) or not isinstance(table, str):
            continue
        if str(name).startswith("sqlite_"):
            continue
        try:
            mem.execute(sql)
        except sqlite3.Error:
            continue
        if kind == "table":
            info = mem.execute(f'PRAGMA table_info("{name}")').fetchall()
            without_rowid = "WITHOUT ROWID" in sql.upper()
            if without_rowid:
                keyed = sorted((r for r in info if r[5]), key=lambda r: r[5])
                rest = [r for r in info if not r[5]]
                ordered = keyed + rest
            else:
                ordered = list(info)
            out.append(
                _Object(str(name), str(table), "table", root, [r[1] for r in ordered],
                        [str(r[2]).upper() for r in ordered], not without_rowid, [], False)
            )  # fmt: skip
        else:
            info = mem.execute(f'PRAGMA index_info("{name}")').fetchall()
            out.append(
                _Object(str(name), str(table), "index", root, [r[2] for r in info] + ["rowid"],
                        [""] * (len(info) + 1), False, [], False)
            )  # fmt: skip
    mem.close()
    return out


def _fits(values: Sequence[object], obj: _Object) -> bool:
    if len(values) != len(obj.columns):
        return False
    for value, affinity in zip(values, obj.affinities, strict=True):
        if value is None:
            continue
        if "INT" in affinity and not isinstance(value, int):
            return False
        if affinity in ("REAL", "FLOAT", "DOUBLE") and not isinstance(value, (int, float)):
            return False
        if "TEXT" in affinity and not isinstance(value, str):
            return False
        if affinity == "BLOB" and not isinstance(value, bytes):
            return False
    return True


def _copy_all(db: pages.Database, dst: sqlite3.Connection) -> dict[str, int]:
    objects = _schema(db)
    if not objects:
        raise RecoveryError("the table list (page 1) cannot be read; nothing to recover from")
    seen: set[int] = {1} | db.freelist()
    for obj in objects:
        obj.leaves, obj.damaged = db.walk(obj.root, seen)
    # Leaf pages no intact parent reaches: each goes to the one damaged object it fits.
    damaged = [o for o in objects if o.damaged]
    for number in range(1, db.pages + 1):
        if number in seen or not damaged:
            continue
        try:
            kind = db.kind(number)
            rows = (
                list(db.leaf_rows(number)) if kind in (pages.LEAF_TABLE, pages.LEAF_INDEX) else []
            )
        except pages.PageError:
            continue
        if not rows:
            continue
        wanted_rowid = kind == pages.LEAF_TABLE
        fits = [
            o for o in damaged
            if o.rowid == wanted_rowid and (o.kind == "table" or not wanted_rowid)
            and all(_fits(values, o) for _, values in rows)
        ]  # fmt: skip
        if len(fits) == 1:
            fits[0].leaves.append(number)
        elif fits:
            log.warning("Page %d fits %s; left out", number, ", ".join(o.name for o in fits))
    targets = {
        name: [r[1] for r in dst.execute(f'PRAGMA table_info("{name}")')]
        for (name,) in dst.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    copied: dict[str, int] = {}
    # Rows come back as they were: no trigger may act on them (the outbox trigger would queue
    # every recovered sample for InfluxDB again).
    triggers = dst.execute("SELECT name, sql FROM sqlite_master WHERE type='trigger'").fetchall()
    dst.execute("BEGIN")
    for name, _ in triggers:
        dst.execute(f'DROP TRIGGER "{name}"')
    for obj in objects:
        if obj.kind != "table" or obj.name not in targets or obj.name == "meta":
            continue
        names = [c for c in obj.columns if c in targets[obj.name]]
        picks = [obj.columns.index(c) for c in names]
        head = (["rowid"] if obj.rowid else []) + names
        sql = f'INSERT OR IGNORE INTO "{obj.name}" ({", ".join(head)}) VALUES ({", ".join("?" * len(head))})'
        count = 0
        for leaf in obj.leaves:
            try:
                for rowid, values in db.leaf_rows(leaf):
                    if len(values) > len(obj.columns):
                        continue
                    values = values + [None] * (len(obj.columns) - len(values))
                    row = ([rowid] if obj.rowid else []) + [values[i] for i in picks]
                    try:
                        dst.execute(sql, row)
                        count += 1
                    except sqlite3.Error:
                        continue
            except pages.PageError:
                continue
        copied[obj.name] = count
    for _, sql in triggers:
        dst.execute(sql)
    dst.execute("COMMIT")
    return copied


def _count(conn: sqlite3.Connection, table: str) -> int:
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.DatabaseError:
        return 0
