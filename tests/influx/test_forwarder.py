"""The forwarder against a real VictoriaMetrics (delivery) and the stand-in (refusals)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from hub.model import CATALOG, Reading
from hub.store import influx, outbox
from tests.influx.helpers import commit, drained, forward_until, open_store, readings, settings
from tests.influx.standin import StandIn
from tests.influx.victoria import VictoriaMetrics, export_when


@pytest.mark.influx
def test_points_reach_victoria_exactly(victoria: VictoriaMetrics, tmp_path: Path) -> None:
    cfg = settings(victoria.url, batch_size=700, locations={"dev-1": "living room"})
    store = open_store(tmp_path / "hub.db", cfg)
    try:
        items = readings(3000)
        commit(store, items[:1500])
        commit(store, items[:1500])  # a redelivered batch: stored once, queued once
        commit(store, items[1500:])
        forwarder = forward_until(store, cfg, drained)
        assert forwarder.stats.delivered == 3000
    finally:
        store.close()
    expected: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, float]]] = defaultdict(
        list
    )
    for r in items:
        labels = {"device": r.device, "source": "mqtt", **r.tags}
        if r.device == "dev-1":
            labels["location"] = "living room"
        name = f"{CATALOG[r.metric].family}_{r.metric}"
        expected[(name, tuple(sorted(labels.items())))].append((r.timestamp_ms, r.value))
    got = {}
    for series in export_when(victoria, 3000):
        labels = dict(series["metric"])
        name = labels.pop("__name__")
        got[(name, tuple(sorted(labels.items())))] = list(
            zip(series["timestamps"], series["values"], strict=True)
        )
    assert got.keys() == expected.keys()
    for key, points in expected.items():
        assert got[key] == sorted(points), key  # count, values, ms timestamps, tags


@pytest.mark.influx
def test_ns_precision_lands_on_the_same_millisecond(
    victoria: VictoriaMetrics, tmp_path: Path
) -> None:
    cfg = settings(victoria.url, precision="ns")
    store = open_store(tmp_path / "hub.db", cfg)
    try:
        items = readings(50)
        commit(store, items)
        forward_until(store, cfg, drained)
    finally:
        store.close()
    stamps = sorted(t for s in export_when(victoria, 50) for t in s["timestamps"])
    assert stamps == sorted(r.timestamp_ms for r in items)


def test_bad_points_are_split_out_to_dead_letters(standin: StandIn, tmp_path: Path) -> None:
    def decide(lines: list[str]) -> tuple[int, str, dict[str, str]]:
        bad = [line for line in lines if "device=dev-2" in line and " co2=" in line]
        if bad:
            return 400, f"unable to parse '{bad[0]}': invalid field format", {}
        return 204, "", {}

    standin.decide = decide
    cfg = settings(standin.url, batch_size=64)
    store = open_store(tmp_path / "hub.db", cfg)
    try:
        items = readings(400)
        commit(store, items)
        forwarder = forward_until(store, cfg, drained)
        bad = [r for r in items if r.device == "dev-2" and r.metric == "co2"]
        assert len(standin.accepted) == len(items) - len(bad)
        assert not any("device=dev-2" in x and " co2=" in x for x in standin.accepted)
        letters = store.dead_letters(limit=1000)
        assert letters and all(d["source"] == "influx" for d in letters)
        assert {d["reason"] for d in letters} == {influx.BAD_REQUEST}
        assert all("invalid field format" in d["detail"] for d in letters)
        assert forwarder.stats.dead_lettered == len(bad)
        refused_lines = []
        for d in letters:
            _, payload = store.dead_letter(d["id"])  # type: ignore[misc]
            refused_lines += payload.decode().split("\n")
        assert sorted(refused_lines) == sorted(
            x for x in refused_lines if "device=dev-2" in x and " co2=" in x
        )
        assert len(refused_lines) == len(bad)
        # Re-queued, they are the same points again.
        with store.transaction() as conn:
            assert sum(outbox.requeue(conn, d["id"]) for d in letters) == len(bad)
        assert outbox.state(store.conn).backlog == len(bad)
    finally:
        store.close()


def test_order_per_series_is_kept_through_retries(standin: StandIn, tmp_path: Path) -> None:
    calls = {"n": 0}

    def decide(lines: list[str]) -> tuple[int, str, dict[str, str]]:
        calls["n"] += 1
        if calls["n"] % 3 == 1:
            return 503, "service unavailable", {}
        if calls["n"] % 3 == 2:
            return 429, "too many requests", {"Retry-After": "0"}
        return 204, "", {}

    standin.decide = decide
    cfg = settings(standin.url, batch_size=50, probe_interval=0.01)
    store = open_store(tmp_path / "hub.db", cfg)
    try:
        items = readings(300)
        # Committed in an order that is not timestamp order: delivery follows the outbox.
        commit(store, items[150:])
        commit(store, items[:150])
        forwarder = forward_until(store, cfg, drained)
    finally:
        store.close()
    assert forwarder.stats.retries >= 2 * 6
    assert forwarder.stats.probes == 0  # the server answered: real errors back off, no probing
    assert len(standin.accepted) == 300  # nothing twice, nothing lost
    per_series: dict[str, list[int]] = defaultdict(list)
    for line in standin.accepted:
        head, _, ts = line.rpartition(" ")
        per_series[head.rpartition(" ")[0] + head.rpartition("=")[0]].append(int(ts))
    expected_order: dict[str, list[int]] = defaultdict(list)
    for r in items[150:] + items[:150]:
        expected_order[r.device + r.metric + str(sorted(r.tags.items()))].append(r.timestamp_ms)
    assert sorted(map(tuple, per_series.values())) == sorted(map(tuple, expected_order.values()))


def test_unauthorized_pauses_without_dead_letters(standin: StandIn, tmp_path: Path) -> None:
    standin.decide = lambda lines: (401, "unauthorized access", {})
    cfg = settings(standin.url)
    store = open_store(tmp_path / "hub.db", cfg)
    try:
        commit(store, readings(100))
        seen: dict[str, object] = {}

        def paused(f: influx.Forwarder) -> bool:
            status = f.status()
            if status["state"] == "paused_auth" and len(standin.requests) >= 3:
                seen.update(status)
                return True
            return False

        forward_until(store, cfg, paused)
        assert "token" in str(seen["summary"]) and "401" in str(seen["summary"])
        assert seen["backlog"] == 100
        assert store.dead_letters() == []
        # The token is fixed server-side: forwarding resumes by itself, nothing lost.
        standin.decide = lambda lines: (204, "", {})
        forwarder = forward_until(store, cfg, drained)
        assert forwarder.status()["state"] in ("idle", "forwarding")
        assert len(standin.accepted) == 100
    finally:
        store.close()


def test_unreachable_server_retries_and_keeps_everything(tmp_path: Path) -> None:
    from tests.support.mosquitto import free_port

    cfg = settings(f"http://127.0.0.1:{free_port()}")
    store = open_store(tmp_path / "hub.db", cfg)
    try:
        commit(store, readings(20))
        forwarder = forward_until(store, cfg, lambda f: f.stats.retries >= 3)
        status = forwarder.status()
        assert status["state"] == "retrying" and status["backlog"] == 20
        assert "Connection" in (status["last_error"] or "") or "refused" in (
            status["last_error"] or ""
        )
        assert status["lag_s"] > 0
    finally:
        store.close()


def test_inf_goes_to_dead_letters_without_asking(standin: StandIn, tmp_path: Path) -> None:
    cfg = settings(standin.url)
    store = open_store(tmp_path / "hub.db", cfg)
    try:
        commit(store, [Reading("d", "co2", math.inf, 1_763_800_000_000), *readings(5)])
        forward_until(store, cfg, drained)
        letters = store.dead_letters()
        assert [d["reason"] for d in letters] == [influx.UNREPRESENTABLE]
        assert len(standin.accepted) == 5
    finally:
        store.close()


def test_request_carries_bucket_org_precision_and_token(standin: StandIn, tmp_path: Path) -> None:
    cfg = settings(standin.url, precision="ns")
    store = open_store(tmp_path / "hub.db", cfg)
    try:
        commit(store, readings(3))
        forward_until(store, cfg, drained)
    finally:
        store.close()
    query, auth, lines, status = standin.requests[0]
    assert query["bucket"] == ["hub"] and query["org"] == ["home"]
    assert query["precision"] == ["ns"]
    assert auth == "Token secret-token"
    assert status == 204 and all(line.endswith("000000") for line in lines)
    assert orjson.dumps(lines)


def test_too_large_splits_until_it_fits_and_missing_bucket_dead_letters(
    standin: StandIn, tmp_path: Path
) -> None:
    standin.decide = lambda lines: (
        (413, "request too large", {}) if len(lines) > 10 else (204, "", {})
    )
    cfg = settings(standin.url, batch_size=100)
    store = open_store(tmp_path / "hub.db", cfg)
    try:
        commit(store, readings(100))
        forward_until(store, cfg, drained)
        assert len(standin.accepted) == 100 and store.dead_letters() == []
        standin.decide = lambda lines: (404, 'bucket "hub" not found', {})
        commit(store, readings(30, start_ms=1_763_900_000_000))
        forward_until(store, cfg, drained)
        (letter,) = store.dead_letters()
        assert letter["reason"] == influx.NOT_FOUND and "not found" in letter["detail"]
        with store.transaction() as conn:
            assert outbox.requeue(conn, letter["id"]) == 30
    finally:
        store.close()


def test_refused_batches_keep_within_the_dead_letter_bounds(
    standin: StandIn, tmp_path: Path
) -> None:
    """A refused batch becomes one dead letter through the store's bounds, like any other:
    the lines beyond `max_payload` are cut (length and SHA-256 kept) and counted into the
    size cap. Before, the outbox inserted it whole, outside the accounting."""
    import hashlib

    standin.decide = lambda lines: (400, "unable to parse: invalid field format", {})
    cfg = settings(standin.url, batch_size=3000)
    store = open_store(tmp_path / "hub.db", cfg)
    try:
        items = readings(3000)
        commit(store, items)
        before = store.dead_letter_bytes
        forward_until(store, cfg, drained)
        letters = store.dead_letters(limit=1000)
        assert letters and {d["source"] for d in letters} == {"influx"}
        limit = store.dead_letter_limits.max_payload
        kept = 0
        for d in letters:
            _, payload = store.dead_letter(d["id"])  # type: ignore[misc]
            assert len(payload) <= limit
            kept += len(payload)
        big = [d for d in letters if d["payload_bytes"] > limit]
        assert big, [d["payload_bytes"] for d in letters]  # the batch's lines were over it
        full = store.conn.execute(
            "SELECT payload_sha256 FROM dead_letters WHERE id=?", (big[0]["id"],)
        ).fetchone()[0]
        assert full and len(full) == len(hashlib.sha256().hexdigest())
        assert store.dead_letter_bytes - before == kept
        # The points themselves are whole: all of them go back to the outbox.
        with store.transaction() as conn:
            assert sum(outbox.requeue(conn, d["id"]) for d in letters) == 3000
    finally:
        store.close()
