"""What the CLI prints fits an 80-column terminal and says what it means (issue #15).

Through click's runner with COLUMNS=80, over stores and config files of the test's own."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import orjson
import yaml
from click.testing import CliRunner

from hub.alerts.store import Alert, AlertStore
from hub.cli import cli
from hub.model import Reading
from hub.store.sqlite import Batch, Store

STARTED_MS = int(time.time() * 1000) - 3_600_000
MESSAGE = "buggy: motor at 72 °C (> 71 °C / 160 °F)"  # as the rc pack words it


def run(*args: str) -> str:
    result = CliRunner(env={"COLUMNS": "80"}).invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def alert(alert_id: int, rule: str, device: str, value: float, **extra: object) -> Alert:
    return Alert(
        id=alert_id, rule=rule, device=device, metric="motor_temperature", severity="warning",
        state="firing", value=value, threshold=71.0, unit="°C", message=MESSAGE,
        device_class="temperature", started_ms=STARTED_MS, updated_ms=STARTED_MS, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def test_alerts_list_at_80_columns_keeps_rule_time_and_message_whole(tmp_path: Path) -> None:
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}))
    (tmp_path / "data").mkdir()
    store = AlertStore(tmp_path / "data" / "hub.db", background=False)
    store.save(alert(1, "rc_motor_temperature_high", "buggy", 76.4))
    store.save(alert(2, "rc_esc_temperature_critical", "buggy-livingroom", 101.0,
                     acknowledged_by="ann", acknowledged_ms=STARTED_MS + 1000))  # fmt: skip
    store.close()
    out = run("alerts", "list", "-c", str(config))
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    assert "…" not in out, out
    # The rule and the start time each on one line, whole.
    assert any("rc_motor_temperature_high" in line for line in lines), out
    assert any("rc_esc_temperature_critical" in line for line in lines), out
    started = time.strftime("%Y-%m-%d", time.gmtime(STARTED_MS / 1000))
    clock = time.strftime("%H:%M:%S", time.gmtime(STARTED_MS / 1000))
    assert any(started in line for line in lines) and any(clock in line for line in lines), out
    # The message reads in at most two lines per alert (it took six).
    holding = [line for line in lines if "motor at" in line or "160 °F" in line]
    assert 2 <= len(holding) <= 4, out
    assert "ann" in out and "buggy-livingroom" in out, out


def test_config_check_lists_problems_in_line_order(tmp_path: Path) -> None:
    bad = tmp_path / "hub.yaml"
    # Sections in the reverse of the schema's order: the problems come back by line.
    bad.write_text(
        "web:\n  port: 99999\n"
        "store:\n  synchronous: fast\n"
        "ingest:\n  batch_max: 0\n"
        "broker:\n  urll: mqtt://x\n"
    )
    result = CliRunner(env={"COLUMNS": "80"}).invoke(cli, ["config", "check", str(bad)])
    assert result.exit_code == 2
    lines = [int(m) for m in re.findall(rf"{re.escape(str(bad))}:(\d+):", result.output)]
    assert lines == [2, 4, 6, 8], result.output


def status_run(tmp_path: Path, stored: int, samples: int) -> str:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data_dir)}))
    store = Store(data_dir / "hub.db")
    start = int(time.time() * 1000) - samples * 1000
    store.commit(Batch(readings=[Reading("n1", "co2", 500.0, start + i * 1000, "ppm") for i in range(samples)]))  # fmt: skip
    store.close()
    now = time.time()
    status = {
        "version": "test", "state": "running", "pid": os.getpid(), "started_at": now - 60,
        "updated_at": now - 1,
        "broker": {"url": "mqtt://127.0.0.1:1883", "managed": True, "state": "connected"},
        "ingest": {"messages": 900, "readings_stored": stored, "duplicates": 0, "events": 0},
        "store": {"path": str(data_dir / "hub.db"), "size_bytes": 1_000_000},
    }  # fmt: skip
    (data_dir / "status.json").write_bytes(orjson.dumps(status))
    return " ".join(run("status", "-c", str(config)).split())  # as read, not as wrapped


def test_status_explains_readings_stored_against_samples(tmp_path: Path) -> None:
    out = status_run(tmp_path, stored=1507, samples=1580)
    assert re.search(r"Readings\s+1507 stored since the hub started", out), out
    assert "1580 samples" in out, out
    # Why 73 more: the store holds earlier runs, and the status is a moment old.
    assert "73 more samples than this run stored" in out, out
    assert "earlier runs" in out and "status was written" in out, out


def test_status_says_nothing_more_when_they_agree(tmp_path: Path) -> None:
    out = status_run(tmp_path, stored=300, samples=300)
    assert "300 samples" in out and "more samples" not in out and "fewer" not in out, out
