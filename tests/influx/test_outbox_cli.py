"""The outbox bound, backfill, and `hub deadletters` / `hub influx` on a real store."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import orjson
import pytest
import yaml
from click.testing import CliRunner

from hub.bus import hub_json
from hub.cli.deadletters import deadletters
from hub.cli.influx import influx
from hub.model import Reading
from hub.store import outbox
from hub.store.sqlite import Batch, DeadLetter, Store
from tests.influx.helpers import commit, drained, forward_until, open_store, readings, settings
from tests.influx.standin import StandIn
from tests.support.mosquitto import free_port


def test_outbox_is_written_in_the_same_transaction_and_only_for_new_samples(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "hub.db")
    try:
        commit(store, readings(10))
        assert outbox.state(store.conn).backlog == 0  # never configured: nothing queued
        with store.transaction() as conn:
            outbox.configure(conn, True, 1000)
        items = readings(10, start_ms=1_763_800_000_000)
        commit(store, items)
        commit(store, items)  # redelivery: no new samples, nothing queued twice
        with pytest.raises(RuntimeError), store.transaction() as conn:
            store._write(conn, Batch(readings=readings(5, start_ms=1_763_900_000_000)))
            raise RuntimeError("crash before commit")
        st = outbox.state(store.conn)
        assert st.backlog == 10 and st.oldest_ts == items[0].timestamp_ms
        assert store.conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 20
    finally:
        store.close()


def test_full_outbox_refuses_loudly_and_keeps_everything_stored(
    standin: StandIn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = settings(f"http://127.0.0.1:{free_port()}", max_outbox=outbox.BYTES_PER_ROW * 100)
    store = open_store(tmp_path / "hub.db", dead)
    try:
        items = readings(250)
        commit(store, items)
        with caplog.at_level(logging.ERROR, logger="hub.store.influx"):
            forwarder = forward_until(store, dead, lambda f: f.stats.retries >= 1)
        status = forwarder.status()
        assert status["state"] == "outbox_full" and "OUTBOX FULL" in status["summary"]
        assert status["refused"] == 150 and status["backlog"] == 100
        assert any("NOT queued" in r.message for r in caplog.records)
        # Nothing stored is lost: every reading is in samples; the oldest 100 are queued.
        assert store.conn.execute("SELECT count(*) FROM samples").fetchone()[0] == 250
        queued = [r[0] for r in store.conn.execute("SELECT ts FROM outbox ORDER BY id")]
        assert queued == [r.timestamp_ms for r in items[:100]]
        # The server is back: the backlog drains and new readings are queued again.
        up = settings(standin.url, max_outbox=outbox.BYTES_PER_ROW * 100)
        forward_until(store, up, drained)
        commit(store, readings(10, start_ms=1_763_900_000_000))
        assert outbox.state(store.conn).backlog == 10
        assert len(standin.accepted) == 100
    finally:
        store.close()


def write_config(tmp_path: Path, url: str, **influx_extra: object) -> Path:
    path = tmp_path / "hub.yaml"
    config = {
        "data_dir": str(tmp_path / "data"),
        "influx": {"enabled": True, "url": url, "token": "t", "min_free_disk": 0, **influx_extra},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_backfill_queues_history_and_status_reports_it(standin: StandIn, tmp_path: Path) -> None:
    config = write_config(tmp_path, standin.url)
    store = Store(tmp_path / "data" / "hub.db")
    now = int(time.time() * 1000)
    old = [Reading("airq-1", "co2", float(i), now - 10 * 86400_000 + i) for i in range(5)]
    recent = [Reading("airq-1", "co2", float(i), now - 86400_000 + i) for i in range(30)]
    commit(store, old + recent)
    store.close()
    runner = CliRunner()
    result = runner.invoke(influx, ["backfill", "-c", str(config), "--since", "7d"])
    assert result.exit_code == 0, result.output
    assert "Queued 30 readings" in result.output
    result = runner.invoke(influx, ["status", "-c", str(config), "--json"])
    data = orjson.loads(result.output)
    assert data["outbox"]["backlog"] == 30 and data["outbox"]["queueing"] is True
    store = Store(tmp_path / "data" / "hub.db")
    try:
        forward_until(store, settings(standin.url), drained)
    finally:
        store.close()
    assert sorted(int(x.rsplit(" ", 1)[1]) for x in standin.accepted) == [
        r.timestamp_ms for r in recent
    ]
    result = runner.invoke(influx, ["status", "-c", str(config)])
    assert "0 queued" in result.output


def test_deadletters_list_show_replay_purge_for_both_sources(
    standin: StandIn, tmp_path: Path
) -> None:
    config = write_config(tmp_path, standin.url)
    store = open_store(tmp_path / "data" / "hub.db", settings(standin.url))
    ts = 1_763_800_000_000
    good = hub_json.encode([Reading("airq-1", "co2", 612.0, ts)])
    store.commit(
        Batch(
            dead_letters=[
                # Refused by a codec bug at the time; decodes fine now.
                DeadLetter(ts, "mqtt", "hub/readings/airq-1", "internal_error", "boom", good),
                DeadLetter(ts, "mqtt", "hub/readings/airq-1", "bad_json", "not JSON", b"{nope"),
            ]
        )
    )
    standin.decide = lambda lines: (400, "unable to parse: bad timestamp", {})
    commit(store, [Reading("airq-2", "pm2_5", 3.0, ts), Reading("airq-2", "pm2_5", 4.0, ts + 1)])
    forward_until(store, settings(standin.url), drained)
    store.close()
    runner = CliRunner()
    listed = runner.invoke(deadletters, ["list", "-c", str(config), "--json"])
    rows = [orjson.loads(line) for line in listed.output.splitlines()]
    assert [(r["source"], r["reason"]) for r in rows] == [
        ("mqtt", "internal_error"),
        ("mqtt", "bad_json"),
        ("influx", "influx_bad_request"),  # one per batch and reason, not one per point
    ]
    influx_ids = [r["id"] for r in rows if r["source"] == "influx"]
    shown = runner.invoke(deadletters, ["show", "-c", str(config), str(influx_ids[0])])
    assert "bad timestamp" in shown.output and "air,device=airq-2" in shown.output
    assert "2 points; first: air,device=airq-2" in shown.output
    table = runner.invoke(deadletters, ["list", "-c", str(config), "--source", "influx"])
    assert "influx_bad_request" in table.output and "boom" not in table.output

    replayed = runner.invoke(deadletters, ["replay", "-c", str(config), "--all"])
    assert replayed.exit_code == 1  # the bad JSON is still bad, and says so
    assert "still rejected (invalid_json" in replayed.output
    assert "1 readings stored (0 already there)" in replayed.output
    assert replayed.output.count("re-queued 2 points") == 1
    store = Store(tmp_path / "data" / "hub.db")
    try:
        assert store.conn.execute(
            "SELECT count(*) FROM samples JOIN series ON series.id = series_id "
            "WHERE metric = 'co2' AND ts = ?",
            (ts,),
        ).fetchone() == (1,)
        # The co2 sample just stored is queued too (trigger) beside the two re-queued points.
        assert outbox.state(store.conn).backlog == 3
        standin.decide = lambda lines: (204, "", {})
        forward_until(store, settings(standin.url), drained)
    finally:
        store.close()
    assert any(line.startswith("air,device=airq-2") for line in standin.accepted)

    pending = runner.invoke(deadletters, ["list", "-c", str(config), "--pending", "--json"])
    assert [orjson.loads(x)["reason"] for x in pending.output.splitlines()] == ["bad_json"]
    purged = runner.invoke(deadletters, ["purge", "-c", str(config), "--replayed", "--yes"])
    assert "Purged 2" in purged.output
    store = Store(tmp_path / "data" / "hub.db")
    try:
        assert store.conn.execute("SELECT count(*) FROM outbox_dead_points").fetchone() == (0,)
        assert store.conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (1,)
    finally:
        store.close()
