"""Make tests/data/store-schema1.sqlite3: a store written by the first released schema (1).

Source: the hub as of commit e70a109^ (the last commit with SCHEMA_VERSION = 1; e70a109 added
schema 2's bounded dead letters). The script exports that commit's `hub` package with
`git archive` into a temporary folder and lets *that* code write the store, so the fixture is
what a user of that release has on disk, not today's schema with columns removed.

Run from the repository root with the project's virtualenv (it needs the hub's dependencies):

    .venv/bin/python tests/data/make_store_schema1.py

What it holds (the migration test checks each survives): 3 series x 50 samples at 1 s,
one event, one device, two dead letters (one with a payload, one without).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

SOURCE_COMMIT = "e70a109^"
HERE = Path(__file__).resolve().parent
OUT = HERE / "store-schema1.sqlite3"

WRITER = r"""
import sys
from pathlib import Path
from hub.store.sqlite import SCHEMA_VERSION, Batch, DeadLetter, Store
from hub.model import DeviceInfo, Event, Reading

assert SCHEMA_VERSION == 1, SCHEMA_VERSION
out = Path(sys.argv[1])
store = Store(out, "full")
t0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
readings = [
    Reading(device, metric, float(i) + offset, t0 + i * 1000, unit=unit, source="mqtt")
    for device, metric, unit, offset in (
        ("airq-1", "pm2_5", "µg/m³", 3.0),
        ("airq-1", "temperature", "°C", 20.0),
        ("buggy", "pack_voltage", "V", 7.4),
    )
    for i in range(50)
]
store.commit(Batch(
    readings=readings,
    events=[Event("buggy", "esc_fault", "none", t0)],
    devices=[DeviceInfo("airq-1", "mqtt", manufacturer="espressif", kind="airq")],
    dead_letters=[
        DeadLetter(t0, "mqtt", "esphome/airq-1/sensor/pm2_5/state", "bad_number", "not a number", b"abc"),
        DeadLetter(t0 + 1, "mqtt", None, "no_route", "no codec", None),
    ],
))
store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
store.conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file for the fixture
store.close()
"""


def main() -> int:
    root = HERE.parent.parent
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", SOURCE_COMMIT, "hub"],
        check=True,
        capture_output=True,
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        target = Path(tmp) / "store.sqlite3"
        subprocess.run(
            [sys.executable, "-c", WRITER, str(target)],
            check=True,
            cwd=tmp,
            env={"PYTHONPATH": tmp, "PATH": "/usr/bin:/bin"},
        )
        OUT.write_bytes(target.read_bytes())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) from {SOURCE_COMMIT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
