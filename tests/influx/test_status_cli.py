"""`hub influx status` from anywhere, the forwarder's health and its /metrics series."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner

from hub.cli.influx import influx
from hub.model import Reading
from hub.store import outbox
from hub.store.influx import Forwarder, StoreWriter, _describe
from hub.store.sqlite import Store
from hub.web import prometheus
from tests.influx.helpers import commit, forward_until, open_store, readings, settings
from tests.influx.standin import StandIn
from tests.support.mosquitto import free_port


def make_hub_dir(root: Path, url: str, enabled: bool = True) -> Path:
    """A config with a RELATIVE data_dir (as the default is) and a store beside it."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "hub.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": "hub-data",
                "influx": {"enabled": enabled, "url": url, "token": "t", "min_free_disk": 0},
            }
        )
    )
    store = open_store(root / "hub-data" / "hub.db", settings(url))
    commit(store, readings(20))
    store.close()
    return config


def write_running_status(data_dir: Path, influx_section: dict[str, object] | None) -> None:
    status: dict[str, object] = {"state": "running", "updated_at": time.time(), "pid": os.getpid()}
    if influx_section is not None:
        status["influx"] = influx_section
    (data_dir / "status.json").write_bytes(orjson.dumps(status))


def test_status_from_another_directory_says_what_it_read(tmp_path: Path) -> None:
    config = make_hub_dir(tmp_path / "home", "http://influx.example:8086")
    data_dir = (tmp_path / "home" / "hub-data").resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runner = CliRunner()
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        # -c with a relative data_dir: found beside the config file, and said so.
        out = runner.invoke(influx, ["status", "-c", str(config)]).output
        assert str(config.resolve()) in out and str(data_dir) in out, out
        assert "20 queued" in out and "hub not running" in out
        # HUB_CONFIG works the same.
        out = runner.invoke(influx, ["status"], env={"HUB_CONFIG": str(config)}).output
        assert "20 queued" in out
        # --data-dir alone.
        out = runner.invoke(influx, ["status", "--data-dir", str(data_dir)]).output
        assert "20 queued" in out and "embedded defaults" in out
        # Nothing found: where it looked and what to pass.
        result = runner.invoke(influx, ["status"], env={"HUB_CONFIG": None})
        assert result.exit_code == 1
        assert str(elsewhere.resolve() / "hub-data") in result.output
        assert "-c /path/to/hub.yaml" in result.output and "--data-dir" in result.output
    finally:
        os.chdir(cwd)


def test_status_says_forwarding_is_off_rather_than_not_running(tmp_path: Path) -> None:
    config = make_hub_dir(tmp_path, "http://influx.example:8086", enabled=False)
    write_running_status(tmp_path / "hub-data", None)  # a running hub without an influx part
    out = CliRunner().invoke(influx, ["status", "-c", str(config)]).output
    assert "off: the running hub does not forward" in out and "not running" not in out


def test_health_and_metrics_of_a_full_outbox(tmp_path: Path) -> None:
    dead = settings(f"http://127.0.0.1:{free_port()}", max_outbox=outbox.BYTES_PER_ROW * 100)
    store = open_store(tmp_path / "hub.db", dead)
    try:
        commit(store, readings(250))
        forwarder = forward_until(store, dead, lambda f: f.stats.retries >= 1)
    finally:
        store.close()
    status = forwarder.status()
    assert status["state"] == "outbox_full" and status["refused_unsent"] == 150
    assert status["health"]["status"] == "degraded"
    assert "150 readings were stored but not queued" in status["health"]["reason"]
    assert status["last_error"].startswith("cannot reach InfluxDB http://127.0.0.1:")
    assert status["last_error"].endswith("connection refused")
    text = prometheus.render({"state": "running", "influx": status})
    for name in (
        "hub_influx_backlog_points 100",
        "hub_influx_refused_total 150",
        "hub_influx_delivered_total 0",
        "# TYPE hub_influx_retries_total counter",
    ):
        assert name in text, name
    assert "hub_influx_last_success_timestamp_seconds" not in text  # never delivered yet
    status["last_success_at"] = 1_763_800_000.5
    text = prometheus.render({"state": "running", "influx": status})
    assert "hub_influx_last_success_timestamp_seconds 1763800000.5" in text


def test_backfill_fills_refused_ranges_fairly_and_a_second_run_has_nothing_left(
    standin: StandIn, tmp_path: Path
) -> None:
    url = standin.url
    config_path = tmp_path / "hub.yaml"
    budget = outbox.BYTES_PER_ROW * 100
    config_path.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "data"),
                "influx": {"enabled": True, "url": url, "token": "t", "max_outbox": budget},
            }
        )
    )
    store = open_store(tmp_path / "data" / "hub.db", settings(url, max_outbox=budget))
    now = int(time.time() * 1000)
    # Four series, 100 readings each, time-ordered: 100 queued, 300 refused.
    items = [
        Reading(f"dev-{s}", "co2", float(i), now - 100_000 + i * 10)
        for i in range(100)
        for s in range(4)
    ]
    commit(store, items)
    store.close()
    runner = CliRunner()
    # No hub runs and the outbox is full: it queues nothing, says how much is left, exit 1.
    first = runner.invoke(influx, ["backfill", "-c", str(config_path)])
    assert first.exit_code == 1 and "300 left" in first.output, first.output
    shown = runner.invoke(influx, ["status", "-c", str(config_path)])
    assert "300 readings of 4 series" in shown.output
    store = Store(tmp_path / "data" / "hub.db")
    try:
        cfg = settings(url, max_outbox=budget)
        forward_until(store, cfg, lambda f: bool(f.outbox_state and f.outbox_state.backlog == 0))
        # Room for 90 (a tenth stays free for live readings): each series gets its share.
        second = runner.invoke(influx, ["backfill", "-c", str(config_path), "--no-wait"])
        assert "Queued 90 readings" in second.output, second.output
        per_series = dict(
            store.conn.execute(
                "SELECT series_id, count(*) FROM outbox GROUP BY series_id"
            ).fetchall()
        )
        assert len(per_series) == 4 and max(per_series.values()) - min(per_series.values()) <= 1
        while outbox.gaps(store.conn):
            forward_until(
                store, cfg, lambda f: bool(f.outbox_state and f.outbox_state.backlog == 0)
            )
            runner.invoke(influx, ["backfill", "-c", str(config_path), "--no-wait"])
        forward_until(store, cfg, lambda f: bool(f.outbox_state and f.outbox_state.backlog == 0))
    finally:
        store.close()
    last = runner.invoke(influx, ["backfill", "-c", str(config_path)])
    assert last.exit_code == 0 and "Nothing left to backfill" in last.output
    assert len(standin.accepted) == len(set(standin.accepted)) == 400  # each exactly once
    shown = runner.invoke(influx, ["status", "-c", str(config_path)])
    assert "Refused" not in shown.output


def test_urllib3_errors_read_as_sentences() -> None:
    import urllib3

    http = urllib3.PoolManager(retries=False)
    with pytest.raises(Exception) as caught:
        http.request("GET", f"http://127.0.0.1:{free_port()}/health", timeout=2)
    assert _describe(caught.value) == "connection refused"


def test_forwarder_refreshes_while_a_batch_waits(tmp_path: Path) -> None:
    """The retry loop used to freeze the figures: new readings stored during an outage must
    show up in the backlog while the first batch still waits for the server."""
    import asyncio

    dead = settings(f"http://127.0.0.1:{free_port()}", retry_min=5, retry_max=5, probe_interval=5)
    store = open_store(tmp_path / "hub.db", dead)

    async def main() -> list[int]:
        writer = StoreWriter(store)
        forwarder = Forwarder(dead, store.path, writer, keep_dead_letter=store.keep_dead_letter)
        task = asyncio.create_task(forwarder.run())
        seen = []
        try:
            await asyncio.sleep(0.3)
            commit(store, readings(10, start_ms=1_763_800_000_000))
            await asyncio.sleep(1.0)  # the batch now waits 5 s for its retry
            seen.append(forwarder.status()["backlog"])
            commit(store, readings(30, start_ms=1_763_900_000_000))
            await asyncio.sleep(1.0)
            seen.append(forwarder.status()["backlog"])
            assert forwarder.status()["state"] == "retrying"
        finally:
            await forwarder.stop()
            await asyncio.wait_for(task, 15)
            forwarder.close()
            writer.close()
        return seen

    try:
        assert asyncio.run(main()) == [10, 40]
    finally:
        store.close()


def test_readings_stored_while_forwarding_was_off_are_kept_for_backfill(tmp_path: Path) -> None:
    store = Store(tmp_path / "hub.db")
    now = int(time.time() * 1000)
    try:
        with store.transaction() as conn:
            outbox.configure(conn, True, 1000, now_ms=now - 100_000)
        commit(store, [Reading("airq-1", "co2", 1.0, now - 90_000)])  # queued
        with store.transaction() as conn:
            outbox.configure(conn, False, 0, now_ms=now - 80_000)  # influx.enabled: false
        off = [Reading("airq-1", "co2", float(i), now - 70_000 + i) for i in range(5)]
        commit(store, off)  # stored, not queued
        with store.transaction() as conn:
            outbox.configure(conn, True, 1000, now_ms=now)  # on again
        st = outbox.state(store.conn)
        assert st.backlog == 1 and st.history_points == 5
        (gap,) = outbox.gaps(store.conn)
        with store.transaction() as conn:
            assert outbox.fill_gap(conn, gap, 100) == (5, True)
        assert outbox.state(store.conn).backlog == 6 and outbox.gaps(store.conn) == []
    finally:
        store.close()


def test_full_error_repeats_on_its_interval_and_failing_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hub.store import influx as influx_module

    monkeypatch.setattr(influx_module, "FULL_REPEAT", 0.5)  # a minute in production
    dead = settings(f"http://127.0.0.1:{free_port()}", max_outbox=outbox.BYTES_PER_ROW * 10)
    store = open_store(tmp_path / "hub.db", dead)
    started = time.monotonic()
    try:
        commit(store, readings(20))
        with caplog.at_level(logging.INFO, logger="hub.store.influx"):
            forwarder = forward_until(store, dead, lambda f: time.monotonic() - started > 1.8)
    finally:
        store.close()
    assert forwarder.stats.retries >= 5
    full = [r for r in caplog.records if "outbox full" in r.message]
    failing = [r for r in caplog.records if "delivery is failing" in r.message]
    assert 2 <= len(full) <= 5 and all(r.levelno == logging.ERROR for r in full)
    assert len(failing) == 1


def test_a_store_with_the_old_trigger_gets_the_one_that_records_ranges(tmp_path: Path) -> None:
    store = Store(tmp_path / "hub.db")
    store.conn.executescript(
        "DROP TRIGGER outbox_append_v2;"
        "CREATE TRIGGER outbox_append AFTER INSERT ON samples BEGIN SELECT 1; END;"
    )
    store.close()
    store = Store(tmp_path / "hub.db")  # what an upgraded hub does at start
    try:
        names = {
            r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")
        }
        assert "outbox_append" not in names and "outbox_append_v2" in names
        with store.transaction() as conn:
            outbox.configure(conn, True, 2)
        commit(store, readings(5))
        assert outbox.state(store.conn).gap_points == 3
    finally:
        store.close()


def test_refused_ranges_never_cover_a_reading_that_was_queued(tmp_path: Path) -> None:
    """Full, room again, full again: two ranges per series, and between them the readings that
    were queued; filling the ranges queues exactly the refused ones."""
    store = Store(tmp_path / "hub.db")
    start = 1_763_800_000_000
    try:
        with store.transaction() as conn:
            outbox.configure(conn, True, 10)
        commit(store, [Reading("airq-1", "co2", float(i), start + i) for i in range(15)])
        with store.transaction() as conn:  # the server took the first five
            first = outbox.read_batch(conn, 0, 5)
            outbox.delivered(conn, first[0].id, first[-1].id)
        commit(store, [Reading("airq-1", "co2", float(i), start + i) for i in range(15, 25)])
        gaps = outbox.gaps(store.conn)
        assert [(g.first_ts - start, g.last_ts - start, g.points) for g in gaps] == [
            (10, 14, 5),
            (20, 24, 5),
        ]
        for gap in gaps:
            with store.transaction() as conn:
                outbox.fill_gap(conn, gap, 100)
        queued = [r.ts - start for r in outbox.read_batch(store.conn, 0, 100)]
        assert sorted(queued) == list(range(5, 25))  # 0-4 delivered; nothing twice
        assert outbox.state(store.conn).gap_points == 0
    finally:
        store.close()
