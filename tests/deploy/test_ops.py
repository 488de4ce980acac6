"""`hub backup`, `hub restore`, `hub migrate` through the real CLI, on real SQLite stores."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import orjson
import yaml

from hub.model import Reading
from hub.store.sqlite import SCHEMA_VERSION, Batch, DeadLetter, Store

REPO = Path(__file__).resolve().parents[2]
SCHEMA1 = REPO / "tests" / "data" / "store-schema1.sqlite3"


def hub(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "hub", *args, "-c", str(workdir / "hub.yaml")],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def make_workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "hub.yaml").write_text(yaml.safe_dump({"data_dir": str(path / "data")}))
    return path


def fill(db: Path, count: int = 100) -> None:
    store = Store(db, "normal")
    store.commit(
        Batch(
            readings=[
                Reading("airq-1", "pm2_5", float(i), 1_767_225_600_000 + i) for i in range(count)
            ],
            dead_letters=[DeadLetter(1, "mqtt", "x/y", "bad_number", "nan", b"zz")],
        )
    )
    store.close()


def samples(db: Path) -> list[tuple[int, float]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT ts, value FROM samples ORDER BY ts").fetchall()
    finally:
        conn.close()


def test_backup_then_restore_round_trip_with_secrets(tmp_path: Path) -> None:
    src = make_workdir(tmp_path / "src")
    fill(src / "data" / "hub.db", 100)
    (src / "data" / "devices.json").write_text('{"devices": []}')
    (src / "data" / "secrets.yaml").write_text("wifi_password: hunter2\n")
    archive = tmp_path / "out" / "b.tar"

    plain = hub(src, "backup", "-o", str(tmp_path / "plain.tar"))
    assert plain.returncode == 0, plain.stderr
    with tarfile.open(tmp_path / "plain.tar") as tar:
        names = tar.getnames()
    assert "data/devices.json" in names and "data/secrets.yaml" not in names

    done = hub(src, "backup", "-o", str(archive), "--secrets")
    assert done.returncode == 0, done.stderr
    assert "Backed up 100 samples" in done.stdout
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        manifest = orjson.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert {"store/hub.db", "data/secrets.yaml", "config/hub.yaml"} <= set(tar.getnames())
    assert manifest["schema"] == SCHEMA_VERSION and manifest["samples"] == 100

    dst = make_workdir(tmp_path / "dst")
    fill(dst / "data" / "hub.db", 3)  # something to replace, kept beside
    restored = hub(dst, "restore", str(archive), "--secrets")
    assert restored.returncode == 0, restored.stderr
    assert samples(dst / "data" / "hub.db") == samples(src / "data" / "hub.db")
    assert (dst / "data" / "secrets.yaml").read_text() == "wifi_password: hunter2\n"
    assert stat.S_IMODE((dst / "data" / "secrets.yaml").stat().st_mode) == 0o600
    kept = list((dst / "data").glob("hub.db.before-restore-*"))
    assert len(kept) == 1 and len(samples(kept[0])) == 3
    # The restored store opens in a hub and passes the full check.
    check = hub(dst, "store", "check")
    assert check.returncode == 0 and "ok" in check.stdout


def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    work = make_workdir(tmp_path / "w")
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file at all" * 100)
    result = hub(work, "restore", str(junk))
    assert result.returncode == 2
    assert "is not a hub backup" in result.stderr and "Traceback" not in result.stderr
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tar:
        tar.add(__file__, arcname="notes.txt")
    result = hub(work, "restore", str(other))
    assert result.returncode == 2 and "no valid manifest.json" in result.stderr
    missing = hub(work, "restore", str(tmp_path / "nope.tar"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert not (work / "data" / "hub.db").exists()


def test_restore_refuses_while_a_hub_runs(tmp_path: Path) -> None:
    src = make_workdir(tmp_path / "src")
    fill(src / "data" / "hub.db", 5)
    assert hub(src, "backup", "-o", str(tmp_path / "b.tar")).returncode == 0
    dst = make_workdir(tmp_path / "dst")
    (dst / "data").mkdir()
    # status.json as a running hub writes it, with a live pid (this test's own process).
    (dst / "data" / "status.json").write_bytes(
        orjson.dumps({"state": "running", "pid": os.getpid()})
    )
    result = hub(dst, "restore", str(tmp_path / "b.tar"))
    assert result.returncode == 2
    assert f"A hub (pid {os.getpid()}) runs" in result.stderr
    assert not (dst / "data" / "hub.db").exists()


def test_backup_without_a_store_is_a_clear_error(tmp_path: Path) -> None:
    work = make_workdir(tmp_path / "w")
    result = hub(work, "backup", "-o", str(tmp_path / "b.tar"))
    assert result.returncode == 1
    assert "no store at" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b.tar").exists()


def test_migrate_upgrades_the_first_released_schema(tmp_path: Path) -> None:
    work = make_workdir(tmp_path / "w")
    (work / "data").mkdir()
    db = work / "data" / "hub.db"
    shutil.copy(SCHEMA1, db)
    before = samples(db)
    assert len(before) == 150

    check = hub(work, "migrate", "--check")
    assert (
        check.returncode == 1
        and f"schema 1, this hub upgrades it to {SCHEMA_VERSION}" in check.stdout
    )

    result = hub(work, "migrate")
    assert result.returncode == 0, result.stderr
    assert f"from schema 1 to {SCHEMA_VERSION}" in result.stdout
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[
            0
        ] == str(SCHEMA_VERSION)
        columns = {r[1] for r in conn.execute("PRAGMA table_info(dead_letters)")}
        assert {"payload_bytes", "payload_sha256"} <= columns
        # Migration 2 filled payload_bytes for the letter that had a payload.
        assert conn.execute(
            "SELECT payload_bytes FROM dead_letters WHERE payload IS NOT NULL"
        ).fetchall() == [(3,)]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    assert samples(db) == before  # nothing lost
    kept = list((work / "data").glob("hub.db.schema1-*"))
    assert len(kept) == 1 and stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    again = hub(work, "migrate")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    # The upgraded store serves queries through the normal read path.
    store = Store(db)
    try:
        series = store.query("pm2_5", device="airq-1", start_ms=0)
    finally:
        store.close()
    assert series and series[0].points


def test_migrate_refuses_a_newer_store(tmp_path: Path) -> None:
    work = make_workdir(tmp_path / "w")
    db = work / "data" / "hub.db"
    fill(db, 3)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    result = hub(work, "migrate")
    assert result.returncode == 2
    assert (
        f"written by a newer hub (schema {SCHEMA_VERSION + 1}, this hub knows {SCHEMA_VERSION})"
        in result.stderr
    )
    assert "never downgraded" in result.stderr and "Traceback" not in result.stderr
    backup = hub(work, "backup", "-o", str(tmp_path / "newer.tar"))
    assert backup.returncode == 0
    dst = make_workdir(tmp_path / "dst")
    restore = hub(dst, "restore", str(tmp_path / "newer.tar"))
    assert restore.returncode == 2 and "written by a newer hub" in restore.stderr


def test_migrate_refuses_a_foreign_file(tmp_path: Path) -> None:
    work = make_workdir(tmp_path / "w")
    (work / "data").mkdir()
    conn = sqlite3.connect(work / "data" / "hub.db")
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.close()
    result = hub(work, "migrate")
    assert result.returncode == 2 and "is not a hub store" in result.stderr
