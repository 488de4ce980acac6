"""`hub backup` while the real hub ingests 5,000 readings/s, then `hub restore` of it."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import yaml

from tests.support.hubproc import REPO, HubProcess, Publisher, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

RATE = 5_000  # readings per second offered
PER_MESSAGE = 10  # readings in one hub JSON message: 500 messages/s
T0 = 1_767_225_600_000


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "hub", *args, "-c", str(config)],
        cwd=config.parent, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def feed(publisher: Publisher, stop: threading.Event, sent: list[int]) -> None:
    """Hub JSON at RATE readings/s, paced per 10 ms tick; each message its own timestamp."""
    start = time.monotonic()
    i = 0
    while not stop.is_set() and i < 60 * RATE // PER_MESSAGE:
        due = int((time.monotonic() - start) * RATE / PER_MESSAGE)
        while i < due:
            values = {f"ch{k}": float(i) for k in range(PER_MESSAGE)}
            publisher.publish(
                "hub/readings/loadrig", orjson.dumps({"ts_ms": T0 + i, "values": values})
            )
            i += 1
        sent[0] = i
        time.sleep(0.01)


def keys(db: Path) -> set[tuple[int, int]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return set(conn.execute("SELECT series_id, ts FROM samples"))
    finally:
        conn.close()


def test_backup_under_load_restores_everything_committed_before_it(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    (tmp_path / "hub").mkdir()
    # Raw samples kept for good: the readings are stamped 2026-01-01 (T0), and a maintenance
    # round during the test would otherwise apply the 30-day retention to them.
    store = {"synchronous": "normal", "retention": {"raw": 0}}
    hub = HubProcess(tmp_path / "hub", mosquitto.url, {"store": store})
    hub.start()
    publisher = Publisher(mosquitto.host, mosquitto.port, client_id="load-publisher")
    stop = threading.Event()
    sent = [0]
    sender = threading.Thread(target=feed, args=(publisher, stop, sent), daemon=True)
    sender.start()
    try:
        wait_for(lambda: hub.sample_count() > 10_000, 60, what="ingest under way")
        rate_from = (time.monotonic(), hub.sample_count())
        time.sleep(2.0)
        # Everything committed at this instant must be in the backup.
        committed_before = keys(hub.db_path)
        before_count = len(committed_before)
        started = time.monotonic()
        archive = tmp_path / "backup.tar"
        result = cli(hub.config_path, "backup", "-o", str(archive))
        backup_seconds = time.monotonic() - started
        after_count = hub.sample_count()
        assert result.returncode == 0, result.stderr
        rate = (after_count - rate_from[1]) / (time.monotonic() - rate_from[0])
        print(
            f"\nbackup of {before_count:,}+ samples took {backup_seconds:.2f} s while the hub "
            f"committed {rate:,.0f} readings/s (offered {RATE:,}/s); {result.stdout.strip()}"
        )
        # The hub went on committing while the backup ran: the backup did not stop it.
        assert after_count > before_count
    finally:
        stop.set()
        sender.join(10)
        publisher.close()
        hub.stop()

    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    target = tmp_path / "restored"
    target.mkdir()
    config = target / "hub.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(target / "data")}))
    restored = cli(config, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    db = target / "data" / "hub.db"
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    restored_keys = keys(db)
    missing = committed_before - restored_keys
    assert not missing, f"{len(missing)} readings committed before the backup are missing"
    assert len(restored_keys) >= before_count
