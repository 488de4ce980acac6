"""The demo's drive sessions, end to end (issue #15): the real `hub run --simulate` against a
real Mosquitto, with short runs, pit stops and a short session gap instead of the demo's
45 s / 30 s / 15 s. A pit stop closes a session; a hub that stops closes the open one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hubproc import REPO, HubProcess, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.mosquitto

SESSION_COLUMNS = "id, start_ms, end_ms, distance_km, energy_wh, consumed_mah"


def sessions(hub: HubProcess) -> list[tuple[str, int, int, float, float, float]]:
    return hub.query(f"SELECT {SESSION_COLUMNS} FROM rc_sessions ORDER BY start_ms")  # type: ignore[return-value]


def moving_since(hub: HubProcess, after_ms: int) -> float:
    """Seconds of samples in which the buggy's motor turned, after `after_ms`."""
    rows = hub.query(
        "SELECT min(s.ts), max(s.ts) FROM samples s JOIN series r ON r.id = s.series_id"
        " WHERE r.device = 'buggy' AND r.metric = 'rpm' AND s.value >= 300 AND s.ts > ?",
        (after_ms,),
    )
    if not rows or rows[0][0] is None:
        return 0.0
    return float((rows[0][1] - rows[0][0]) / 1000)


def test_pit_stops_and_stopping_the_hub_store_sessions(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    hub = HubProcess(
        tmp_path,
        mosquitto.url,
        {
            "simulate": {
                "enabled": True,
                "airq_nodes": 0,
                "buggies": 1,
                "seed": 3,
                "drive_time": "10s",
                "pit_stop": "4s",
                "session_gap": "2s",
            },
            "web": {"enabled": False},
        },
    ).start()
    try:
        # Table (3 s), a 10 s run, then the pit stop: 2 s into it the first session closes.
        first = wait_for(lambda: sessions(hub), 60, 0.2, "a session closed by a pit stop")
        assert len(first) == 1
        # The second run: stop the hub while it drives (a session needs 3 s to count; the
        # run leaves 6 s more before its pit stop would close it).
        wait_for(lambda: moving_since(hub, first[0][2] + 2000) >= 4, 60, 0.2, "the second run")
        assert len(sessions(hub)) == 1
    finally:
        assert hub.stop(30) == 0
    stored = sessions(hub)
    assert len(stored) == 2, stored
    for _, start_ms, end_ms, distance_km, energy_wh, consumed_mah in stored:
        assert end_ms - start_ms >= 3000
        assert distance_km > 0 and energy_wh > 0 and consumed_mah > 0
    assert stored[1][1] > stored[0][2]  # one after the other, never overlapping
    assert "Closed 1 open drive session" in hub.log()

    # What the user sees: `hub sessions list` with distance, energy and pack use.
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env = {k: v for k, v in env.items() if not k.startswith("HUB_")}
    out = subprocess.run(
        [sys.executable, "-m", "hub", "sessions", "-c", str(hub.config_path), "list"],
        env=env, capture_output=True, text=True, timeout=60, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    header, *rows = out.splitlines()
    assert header.split()[:8] == ["ID", "START", "(UTC)", "TIME", "km", "Wh", "mAh", "max"], out
    assert len(rows) == 2 and all(row.startswith("buggy-") for row in rows), out
    for row in rows:
        distance, energy, used = (float(v) for v in row.split()[4:7])
        assert distance > 0 and energy > 0 and used > 0, out
    assert max(len(line) for line in out.splitlines()) <= 80, out
