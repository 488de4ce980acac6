"""Issue #21: a real `hub run` tells the truth while InfluxDB is away, comes back within seconds
of the server, and its backfill finishes with every point delivered exactly once.

Servers: a real VictoriaMetrics (SIGKILLed for the outage) and `Recorder`, a small HTTP server
that counts every point it answered 2xx to (so "exactly once" can be checked point by point).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from hub.bus import hub_json
from hub.cli.influx import influx
from hub.cli.status import status as status_command
from hub.model import CATALOG, Reading
from hub.store import outbox
from tests.influx.recorder import Recorder
from tests.influx.test_outage import influx_config, stream
from tests.influx.victoria import VictoriaMetrics
from tests.support.hubproc import HubProcess, Publisher, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.influx, pytest.mark.mosquitto, pytest.mark.slow]


def production_like(url: str, **extra: Any) -> dict[str, Any]:
    """The defaults a user runs with (retry_max 60 s, probe every 2 s), a small batch wait."""
    config = influx_config(url, **extra)
    for key in ("retry_min", "retry_max"):
        config["influx"].pop(key)
    config["web"] = {"public_read": True}  # /metrics read without the token (#14: off by default)
    return config


def cli_status(hub: HubProcess) -> dict[str, Any]:
    result = CliRunner().invoke(status_command, ["-c", str(hub.config_path), "--json"])
    assert result.exit_code == 0, result.output
    return dict(orjson.loads(result.output))


def influx_section(hub: HubProcess) -> dict[str, Any]:
    return dict(hub.status().get("influx") or {})


def refused_in_store(hub: HubProcess) -> int:
    rows = hub.query("SELECT refused FROM outbox_control WHERE id = 1")
    return int(rows[0][0]) if rows else 0


def http_get(hub: HubProcess, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{hub.config['web']['port']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_full_outbox_is_reported_at_once_and_drains_seconds_after_the_server_returns(
    mosquitto: Mosquitto, victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    budget = outbox.BYTES_PER_ROW * 1500
    hub = HubProcess(tmp_path, mosquitto.url, production_like(victoria.url, max_outbox=budget))
    hub.start()
    stop = threading.Event()
    publisher = threading.Thread(target=stream, args=(mosquitto, 100_000, 400.0, stop))
    publisher.start()
    try:
        wait_for(lambda: influx_section(hub).get("delivered", 0) > 50, 20, what="flow")
        assert influx_section(hub)["health"]["status"] == "ok"
        assert victoria.proc is not None
        victoria.proc.kill()  # SIGKILL: the server is gone mid-stream
        victoria.proc.wait()
        outage_log_from = len(hub.log().splitlines())
        # The moment the store refuses its first reading, status must say so within 2 s.
        wait_for(lambda: refused_in_store(hub) > 0, 60, 0.02, what="outbox full")
        filled_at = time.monotonic()

        def shows_full() -> dict[str, Any] | None:
            section = cli_status(hub)["status"].get("influx") or {}
            return section if section.get("state") == "outbox_full" and section["refused"] else None

        section = wait_for(shows_full, 10, 0.05, what="hub status --json: outbox_full")
        seen_after = time.monotonic() - filled_at
        assert seen_after < 2.0, f"outbox_full showed {seen_after:.2f} s after it filled"
        assert section["health"]["status"] == "degraded"
        assert "outbox is full" in section["health"]["reason"]
        assert section["backlog"] >= 1500 * 0.99 and section["outbox_bytes"] >= budget * 0.99
        wait_for(lambda: "InfluxDB outbox full" in hub.log(), 5, what="the outbox-full ERROR")
        # The web side: /api/health 503 with the forward's reason, /metrics with its series.
        code, body = http_get(hub, "/api/health")
        health = orjson.loads(body)
        assert code == 503 and health["parts"]["influx"]["status"] == "degraded", health
        assert any("outbox is full" in reason for reason in health["reasons"]), health
        code, body = http_get(hub, "/metrics")
        assert code == 200
        metrics = body.decode()
        assert "hub_influx_backlog_points " in metrics and "hub_influx_refused_total " in metrics
        stop.set()
        publisher.join(30)
        time.sleep(3)  # a few probe rounds while it is still down
        outage_lines = hub.log().splitlines()[outage_log_from:]
        victoria.start()  # same port, same storage
        back_at = time.time()
        wait_for(lambda: influx_section(hub).get("backlog") == 0, 30, what="outbox drained")
        drained_at = time.time()
        section = influx_section(hub)
        probe_ok = section["probe_ok_at"]
        assert probe_ok is not None and probe_ok >= back_at - 0.5
        assert drained_at - probe_ok < 5.0, section
        print(
            f"\nserver back -> drained {drained_at - back_at:.2f} s "
            f"(first answered probe -> drained {drained_at - probe_ok:.2f} s); "
            f"{len(outage_lines)} log lines during the outage"
        )
        # The readings refused meanwhile are still owed to InfluxDB: health says so.
        wait_for(lambda: influx_section(hub).get("state") == "idle", 10, what="idle")
        section = influx_section(hub)
        assert section["refused_unsent"] > 0 and section["health"]["status"] == "degraded"
        assert "hub influx backfill" in section["health"]["reason"]
        influx_lines = [line for line in outage_lines if "hub.store.influx" in line]
        assert len(influx_lines) <= 6, "\n".join(influx_lines)  # not one line per retry
    finally:
        stop.set()
        publisher.join(30)
        hub.stop()


def test_hub_sigkilled_during_an_outage_delivers_every_reading_exactly_once(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    with Recorder() as recorder:
        hub = HubProcess(tmp_path, mosquitto.url, production_like(recorder.url)).start()
        stop = threading.Event()
        publisher = threading.Thread(target=stream, args=(mosquitto, 1500, 300.0, stop))
        publisher.start()
        try:
            wait_for(lambda: recorder.points() > 50, 20, what="flow")
            recorder.down()
            wait_for(lambda: influx_section(hub).get("state") == "retrying", 20, what="retrying")
            section = influx_section(hub)
            assert section["health"]["status"] == "degraded"
            # A sentence, not "<urllib3.connection.HTTPConnection object at 0x...>".
            assert section["last_error"].startswith(f"cannot reach InfluxDB {recorder.url}")
            assert "object at 0x" not in section["last_error"]
            hub.kill()  # SIGKILL during the outage
            hub.start()
            publisher.join(60)
            assert not publisher.is_alive()
            wait_for(lambda: hub.sample_count() >= 1500 * 4 // 3, 30, what="all stored")
            recorder.up()  # same port
            wait_for(lambda: influx_section(hub).get("backlog") == 0, 30, what="drained")
            wait_for(lambda: recorder.points() >= hub.sample_count(), 10, what="all received")
            assert recorder.duplicates() == {}
            assert recorder.points() == hub.sample_count()
            assert influx_section(hub)["health"]["status"] == "ok"
        finally:
            stop.set()
            publisher.join(30)
            hub.stop()


def test_backfill_after_an_outage_fills_four_series_exactly_once_and_finishes(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    with Recorder() as recorder:
        budget = outbox.BYTES_PER_ROW * 400
        hub = HubProcess(tmp_path, mosquitto.url, production_like(recorder.url, max_outbox=budget))
        hub.start()
        stop = threading.Event()
        try:
            # Each series' readings arrive in time order (ranges of refused readings are exact
            # then; a late reading inside one could be sent twice, which InfluxDB absorbs).
            start = int(time.time() * 1000) - 60_000
            stream(mosquitto, 150, 300.0, stop, start)
            wait_for(lambda: recorder.points() >= 150, 20, what="flow")
            recorder.down()
            # 2,000 readings into a 400-row outbox
            stream(mosquitto, 1500, 500.0, stop, start + 150 * 10)
            wait_for(lambda: hub.sample_count() >= 1650 * 4 // 3, 30, what="all stored")
            gaps = hub.query("SELECT count(DISTINCT series_id), sum(points) FROM outbox_gaps")
            assert gaps[0][0] >= 4, gaps  # refused readings in all four series
            refused = refused_in_store(hub)
            recorder.up()
            wait_for(lambda: influx_section(hub).get("backlog") == 0, 30, what="live drained")
            runner = CliRunner()
            shown = runner.invoke(influx, ["status", "-c", str(hub.config_path)])
            assert f"{refused} readings of" in shown.output, shown.output
            first = runner.invoke(influx, ["backfill", "-c", str(hub.config_path)])
            assert first.exit_code == 0, first.output
            assert f"Queued {refused} readings" in first.output, first.output
            wait_for(lambda: influx_section(hub).get("backlog") == 0, 30, what="backfill sent")
            second = runner.invoke(influx, ["backfill", "-c", str(hub.config_path)])
            assert second.exit_code == 0 and "Nothing left to backfill" in second.output
            wait_for(lambda: recorder.points() >= hub.sample_count(), 10, what="all received")
            assert recorder.duplicates() == {}
            assert recorder.points() == hub.sample_count()
            shown = runner.invoke(influx, ["status", "-c", str(hub.config_path)])
            assert "Refused" not in shown.output, shown.output
            wait_for(
                lambda: influx_section(hub)["health"]["status"] == "ok", 5, what="health ok again"
            )
            recovered = int(first.output.split("Queued ", 1)[1].split()[0])
            print(f"\nbackfill: {refused} refused, {recovered} recovered by backfill, 0 duplicates")
        finally:
            stop.set()
            hub.stop()


def test_one_bad_measurement_is_one_dead_letter_per_batch_and_reason(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    def decide(lines: list[str]) -> tuple[int, str]:
        bad = [line for line in lines if line.startswith("rc,")]
        if bad:
            return 400, f"partial write: unable to parse '{bad[0]}': field type conflict"
        return 204, ""

    with Recorder() as recorder:
        recorder.decide = decide
        recorder.down()  # everything piles up first, so it leaves as ONE batch of 300
        config = production_like(recorder.url, batch_size=300, linger="3s")
        hub = HubProcess(tmp_path, mosquitto.url, config).start()
        publisher = Publisher(mosquitto.host, mosquitto.port, client_id="bad-measurement")
        ts = int(time.time() * 1000) - 10_000
        try:
            for i in range(200):
                reading = Reading("airq-1", "co2", 400.0 + i, ts + i)
                publisher.publish("hub/readings/airq-1", hub_json.encode([reading], source="test"))
                if i % 2:
                    reading = Reading("buggy", "rpm", float(i), ts + i)
                    publisher.publish("hub/readings/buggy", hub_json.encode([reading]))
            publisher.flush(30)
        finally:
            publisher.close()
        try:
            wait_for(lambda: hub.sample_count() >= 300, 20, what="stored")
            stored = hub.sample_count()
            # The full batch was tried against the dead server and waits for it.
            wait_for(lambda: influx_section(hub).get("state") == "retrying", 20, what="retrying")
            assert influx_section(hub)["backlog"] == stored
            recorder.up()
            wait_for(lambda: influx_section(hub).get("backlog") == 0, 30, what="drained")
            letters = hub.query(
                "SELECT reason, detail FROM dead_letters WHERE source = 'influx' ORDER BY id"
            )
            by_metric = hub.query(
                "SELECT metric, count(*) FROM samples JOIN series ON series.id = series_id "
                "GROUP BY metric"
            )
            rc = sum(n for metric, n in by_metric if CATALOG[metric].family == "rc")
            assert rc == 100
            assert [reason for reason, _ in letters] == ["influx_bad_request"]
            detail = letters[0][1]
            assert f"({rc} points; first: rc,device=buggy" in detail and "HTTP 400" in detail
            assert recorder.points() == stored - rc and recorder.duplicates() == {}
            warnings = [x for x in hub.log().splitlines() if "refused" in x and "for good" in x]
            assert len(warnings) == 1, warnings
            section = influx_section(hub)
            assert section["last_error"].startswith(f"InfluxDB {recorder.url}")
            assert "HTTP 400: partial write" in section["last_error"]
        finally:
            hub.stop()
