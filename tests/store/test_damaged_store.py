"""A damaged store is refused with a clear message, found by `hub store check`, and
`hub store recover` keeps every intact sample (issue #12).

Three kinds of damage a home lab sees: a truncated file (disk full or a bad copy), a garbage
header, and garbage pages in the middle (a failing SD card). Real `hub` commands run as
subprocesses against files written by the hub's own Store.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hub.model import Reading
from hub.store.sqlite import Batch, Store

REPO = Path(__file__).resolve().parents[2]
SAMPLES = 120_000
T0 = 1_763_800_000_000


def hub(workdir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "hub", *args, "-c", str(workdir / "hub.yaml")],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[tuple[str, int, float]]]:
    """A store with 120,000 samples in 12 series, checkpointed into one file."""
    path = tmp_path_factory.mktemp("pristine") / "hub.db"
    store = Store(path, "normal")
    batch = Batch()
    rng = random.Random(7)
    expected = set()
    for i in range(SAMPLES):
        device = f"airq-{i % 12}"
        value = round(rng.uniform(0, 500), 3)
        batch.readings.append(Reading(device, "pm2_5", value, T0 + i * 10, "µg/m³"))
        expected.add((device, T0 + i * 10, value))
    store.commit(batch)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return path, expected


def write_config(workdir: Path, data: Path) -> None:
    """hub.yaml for these commands: the store under `data`, a broker nothing listens on."""
    (workdir / "hub.yaml").write_text(
        yaml.safe_dump({"data_dir": str(data), "broker": {"url": "mqtt://127.0.0.1:9"}})
    )


def damage(path: Path, how: str) -> int:
    """Damage the file; returns how many pages' content was lost."""
    size = path.stat().st_size
    pages = size // 4096
    if how == "truncated":
        os.truncate(path, size // 2)
        return pages - pages // 2
    with path.open("r+b") as f:
        if how == "garbage_header":
            f.write(os.urandom(100))
            return 0
        f.seek(199 * 4096)  # pages 200-249
        f.write(os.urandom(50 * 4096))
    return 50


def samples(path: Path) -> list[tuple[str, int, float]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT s.device, x.ts, x.value FROM samples x JOIN series s ON s.id = x.series_id"
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["truncated", "garbage_header", "garbage_pages"])
def test_damaged_store_is_refused_found_and_recovered(
    tmp_path: Path, pristine: tuple[Path, set[tuple[str, int, float]]], how: str
) -> None:
    source, expected = pristine
    data = tmp_path / "data"
    data.mkdir()
    store_path = data / "hub.db"
    store_path.write_bytes(source.read_bytes())
    lost_pages = damage(store_path, how)
    write_config(tmp_path, data)

    run = hub(tmp_path, "run")
    assert run.returncode == 4, run.stderr[-2000:]
    assert "Traceback" not in run.stderr + run.stdout
    assert "hub store check" in run.stderr and "hub store recover" in run.stderr
    assert len(run.stderr.splitlines()) <= 5, "one clear message, not a page list"

    status = hub(tmp_path, "status")
    assert "Traceback" not in status.stdout + status.stderr
    query = hub(tmp_path, "query", "pm2_5")
    assert "Traceback" not in query.stdout + query.stderr
    assert query.returncode == 4 and "hub store check" in query.stderr

    check = hub(tmp_path, "store", "check")
    assert check.returncode == 1, check.stdout
    assert "DAMAGED" in check.stdout

    recover = hub(tmp_path, "store", "recover")
    assert recover.returncode == 0, recover.stderr
    assert list(data.glob("hub.db.damaged-*")), "the damaged file is kept"
    conn = sqlite3.connect(store_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    got = samples(store_path)
    assert len(got) == len(set(got))
    assert set(got) <= expected, "recovery never invents a sample"
    # Everything not on a lost page comes back: a 4 KiB leaf holds at most ~4096/15 samples.
    assert SAMPLES - len(got) <= lost_pages * (4096 // 15), f"{SAMPLES - len(got)} lost"
    if how == "garbage_header":
        assert len(got) == SAMPLES

    assert hub(tmp_path, "store", "check").returncode == 0


def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / "hub.db")
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()
    write_config(tmp_path, data)
    run = hub(tmp_path, "run")
    assert run.returncode == 4
    assert "not a hub store" in run.stderr and "recipes" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_store_of_a_newer_hub_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Store(data / "hub.db").close()
    conn = sqlite3.connect(data / "hub.db")
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    write_config(tmp_path, data)
    run = hub(tmp_path, "run")
    assert run.returncode == 4
    assert "newer hub" in run.stderr and "Traceback" not in run.stderr
