"""The hub's long-lived MQTT connections leave their threads asleep when nothing happens
(real Mosquitto): paho's thread waits in select() for a quarter of the keep-alive, not 1 s,
and a QoS 0 publish is written by the publishing thread, not by waking paho's.

Counts are asserted (wake-ups of a thread, from /proc), not durations; the one timeout below
only catches a hang."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.bus.clients import DirectWriteClient, idle_select_s, new_client
from hub.bus.mqtt import MqttConnection
from hub.config.broker import BrokerConfig
from tests.support.connections import CountingWakeups
from tests.support.hubproc import wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.mosquitto


def _wakeups(thread_id: int | None) -> int:
    """Times the thread went to sleep and was woken (voluntary context switches)."""
    for line in Path(f"/proc/self/task/{thread_id}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


def test_idle_select_is_a_quarter_of_the_keepalive_within_bounds() -> None:
    assert idle_select_s(30) == 7.5
    assert idle_select_s(5) == 1.25
    assert idle_select_s(2) == 1.0
    assert idle_select_s(3600) == 15.0


def _direct_client(mosquitto: Mosquitto, client_id: str, keepalive: int) -> DirectWriteClient:
    client = new_client(client_id, BrokerConfig(url=mosquitto.url), client_class=DirectWriteClient)
    assert isinstance(client, DirectWriteClient)
    client.connect(mosquitto.host, mosquitto.port, keepalive=keepalive)
    client.loop_start()
    wait_for(lambda: client.is_connected(), 10)
    return client


def test_an_idle_connections_thread_sleeps_and_still_stops_at_once(mosquitto: Mosquitto) -> None:
    """paho's own loop woke its thread every second (three times in 3 s of nothing); now it
    sleeps, and loop_stop() wakes it instead of waiting out its select()."""
    client = _direct_client(mosquitto, "t-idle", keepalive=60)  # select() for 15 s
    assert client._thread is not None
    thread_id = client._thread.native_id
    time.sleep(0.5)  # the CONNACK and the first loop_misc are behind us
    before = _wakeups(thread_id)
    time.sleep(3.0)
    assert _wakeups(thread_id) - before == 0
    started = time.monotonic()
    client.loop_stop()
    assert time.monotonic() - started < 5.0  # (a hang: it would have waited out 15 s)
    assert client._thread is None
    client.disconnect()


def test_keepalive_still_holds_an_idle_connection(mosquitto: Mosquitto) -> None:
    """The longest select() is a quarter of the keep-alive, so PINGREQs still go out in time:
    Mosquitto drops a client silent for 1.5 keep-alives (7.5 s here)."""
    drops: list[object] = []
    client = _direct_client(mosquitto, "t-keepalive", keepalive=5)
    client.on_disconnect = lambda *args: drops.append(args)
    try:
        time.sleep(9.0)
        assert client.is_connected() and not drops
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_qos0_publish_is_written_by_the_caller_without_waking_pahos_thread(
    mosquitto: Mosquitto, protocol: str
) -> None:
    """`MqttConnection.publish` at QoS 0 (the hub's stats every status interval) no longer
    wakes paho's thread; the broker gets the same message, in MQTT 5 (with its empty
    properties) and 3.1.1 alike, and QoS 1 still goes through paho."""
    got: list[tuple[str, bytes, bool]] = []
    watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"t-watch-{protocol}")
    watcher.on_message = lambda c, u, m: got.append((m.topic, m.payload, m.retain))
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe("out/#", qos=1)
    watcher.loop_start()

    async def main() -> None:
        config = BrokerConfig(url=mosquitto.url, protocol=protocol)
        connection = MqttConnection(config, ["in/#"], client_id=f"t-pub-{protocol}")
        connection.start(asyncio.get_running_loop())
        try:
            await asyncio.to_thread(wait_for, lambda: connection.connected, 10)
            await asyncio.sleep(0.3)
            client = connection._client
            counting = CountingWakeups(client._sockpairW)
            client._sockpairW = counting
            connection.publish("out/stats", b'{"a": 1}', qos=0)
            connection.publish("out/text", "\u00e9t\u00e9 " * 100, qos=0, retain=True)
            assert counting.sends == 0
            connection.publish("out/health", b"ok", qos=1)
            assert counting.sends == 1
            await asyncio.to_thread(wait_for, lambda: len(got) == 3, 10)
            client._sockpairW = counting.sock
            assert connection.stats.published == 3
        finally:
            connection.stop()

    try:
        asyncio.run(main())
    finally:
        watcher.loop_stop()
        watcher.disconnect()
    assert got == [
        ("out/stats", b'{"a": 1}', False),
        ("out/text", ("\u00e9t\u00e9 " * 100).encode(), False),  # live: retain not echoed
        ("out/health", b"ok", False),
    ]
