"""No task dies unnoticed (issue #12): the supervisor restarts what is safe to restart and
stops the hub with a non-zero exit otherwise; shutdown always completes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from hub.config.loader import load_config
from hub.ingest import IngestCore
from hub.runtime import Supervisor, until_tick
from hub.service import Hub, run_hub
from hub.store.sqlite import Store
from tests.support.hubproc import Publisher
from tests.support.mosquitto import Mosquitto


async def test_a_restartable_task_is_restarted_after_a_failure() -> None:
    fatal: list[str] = []
    runs = 0
    sup = Supervisor(fatal.append, backoff_max=0.05)

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    sup.spawn("flaky", flaky, restart=True, backoff=0.01)
    for _ in range(100):
        if runs >= 3:
            break
        await asyncio.sleep(0.01)
    assert runs == 3 and not fatal
    assert sup.status()["flaky"]["restarts"] == 2
    await sup.stop()


async def test_a_vital_task_that_fails_or_ends_stops_the_hub() -> None:
    fatal: list[str] = []
    sup = Supervisor(fatal.append)

    async def broken() -> None:
        raise ValueError("bad state")

    async def quits() -> None:
        return

    sup.spawn("broken", broken)
    sup.spawn("quits", quits)
    await asyncio.sleep(0.05)
    assert fatal == ["task broken failed: ValueError: bad state"]
    assert sup.failure == fatal[0]
    assert sup.status()["quits"]["last_error"] == "ended while the hub runs"
    await sup.stop()


def _config(mosquitto: Mosquitto, tmp_path: Path) -> object:
    return load_config(
        None,
        overrides={
            ("data_dir",): str(tmp_path / "data"),
            ("broker", "url"): mosquitto.url,
            ("broker", "client_id"): "hub-supervision-test",
            ("web", "enabled"): False,
            ("store", "rollup_interval"): "0.1s",
            ("status", "interval"): "0.1s",
        },
    )


@pytest.mark.mosquitto
async def test_a_failing_maintenance_loop_is_logged_and_restarted(
    mosquitto: Mosquitto,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    calls = 0
    real = Store.rollup

    def rollup(self: Store, *args: object) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in the rollup")
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "rollup", rollup)
    hub = Hub(_config(mosquitto, tmp_path))  # type: ignore[arg-type]
    await hub.start()
    try:
        for _ in range(300):
            if calls >= 3:
                break
            await asyncio.sleep(0.02)
        assert calls >= 3, "the loop runs again after the failure"
        assert "Task maintenance failed; restarting it" in caplog.text
        assert "a bug in the rollup" in caplog.text  # the traceback is logged
        health = hub.status()["health"]
        assert health["status"] == "degraded" and "maintenance" in " ".join(health["reasons"])
        assert not hub.stop_requested.is_set()
    finally:
        await hub.stop()
    assert "Hub stopped" in caplog.text


@pytest.mark.mosquitto
async def test_a_failing_ingest_stops_the_hub_with_a_non_zero_exit(
    mosquitto: Mosquitto,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    def prepare(self: IngestCore, messages: object) -> object:
        raise RuntimeError("a bug in the decoder path")

    monkeypatch.setattr(IngestCore, "prepare", prepare)
    config = _config(mosquitto, tmp_path)
    stop = asyncio.Event()

    async def feed() -> None:
        await asyncio.sleep(1.0)
        publisher = Publisher(mosquitto.host, mosquitto.port)
        publisher.publish("hub/readings/rig", b'{"values": {"current": 1}}')
        await asyncio.to_thread(publisher.flush, 10)
        publisher.close()

    feeder = asyncio.create_task(feed())
    code = await asyncio.wait_for(run_hub(config, stop), 60)  # type: ignore[arg-type]
    await feeder
    assert code == 1
    assert "Task ingest failed; the hub stops" in caplog.text
    assert "Hub stopped after a failure: task ingest failed" in caplog.text
    assert caplog.records[-1].getMessage().startswith("Hub stopped after a failure")


def test_periodic_tasks_started_apart_wake_together_on_the_tick() -> None:
    """The status refresh, the alert tick and the web server's tick sleep until_tick(): tasks
    started at different moments wake at the same multiple of their interval, in one pass
    of the loop (one wake-up of the hub, not one per task)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        woke: dict[str, float] = {}

        async def periodic(name: str, interval: float) -> None:
            await asyncio.sleep(until_tick(interval))
            woke[name] = loop.time()

        while loop.time() % 0.5 > 0.1:  # start early in a period, so both fit before its end
            await asyncio.sleep(0.01)
        first = asyncio.create_task(periodic("status", 0.5))
        await asyncio.sleep(0.13)
        second = asyncio.create_task(periodic("alerts", 0.5))
        await asyncio.gather(first, second)
        t1, t2 = woke["status"], woke["alerts"]
        assert abs(t1 - t2) < 0.002, woke
        assert min(t1 % 0.5, 0.5 - t1 % 0.5) < 0.02, t1  # on the tick
        # Never a zero sleep just before a boundary (the next tick instead).
        assert 0.5 / 20 < until_tick(0.5) <= 0.5 + 0.5 / 20

    asyncio.run(main())


@pytest.mark.mosquitto
async def test_an_idle_hubs_timers_all_fall_on_the_tick(mosquitto: Mosquitto, tmp_path: Path) -> None:  # fmt: skip
    """An idle hub's loop wakes once per tick, not at a phase of each timer's own: every
    timer it has scheduled (status refresh, alert tick, web server tick, store maintenance,
    ingest's safety net) falls on a whole second of the loop's clock. The maintenance round
    (every 30 s) and ingest's 5 s look for a stuck batch each woke the loop between ticks."""
    config = load_config(
        None,
        overrides={
            ("data_dir",): str(tmp_path / "data"),
            ("broker", "url"): mosquitto.url,
            ("broker", "client_id"): "hub-idle-timers-test",
            ("web", "host"): "127.0.0.1",
            ("web", "port"): 0,
        },
    )
    hub = Hub(config)
    await hub.start()
    try:
        await asyncio.sleep(3.0)  # start-up is over: what is scheduled now is the idle hub's
        loop = asyncio.get_running_loop()
        timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        assert timers
        off = {
            repr(h): round(h.when() % 1.0, 4) for h in timers
            if 0.005 < h.when() % 1.0 < 0.995
        }  # fmt: skip
        assert not off, off
    finally:
        await hub.stop()


def test_tick_after_waits_at_least_the_delay_and_lands_on_the_tick() -> None:
    """The store maintenance round: never sooner than its interval after the last one (or the
    start: a hub's first seconds are not maintenance time), and on the 1 s tick."""
    from hub.runtime import tick_after

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for delay, tick in ((30.0, 1.0), (0.1, 0.1), (2.5, 1.0)):
            wait = tick_after(delay, tick)
            landing = loop.time() + wait
            assert delay <= wait < delay + tick + 0.01, (delay, wait)
            assert min(landing % tick, tick - landing % tick) < 0.002, (delay, landing)

    asyncio.run(main())
