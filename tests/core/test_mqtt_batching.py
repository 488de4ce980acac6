"""Batched hand-offs of the ingest connection (real Mosquitto): group commit's `next_batch`,
paho's burst reads and the joined PUBACKs of a batch.

No timing is asserted: a batch's size and content are, and timeouts only catch a hang."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.bus.mqtt import Message, MqttConnection, SharedTableProperties
from hub.config.broker import BrokerConfig
from tests.support.connections import CountingWakeups, assert_nothing_redelivered, connected
from tests.support.hubproc import Publisher, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.mosquitto


async def _collect(connection: MqttConnection, count: int, max_messages: int, wait_s: float) -> list[list[Message]]:  # fmt: skip
    batches: list[list[Message]] = []
    while sum(len(b) for b in batches) < count:
        batch = await asyncio.wait_for(connection.next_batch(max_messages, wait_s), 30)
        connection.ack(batch)
        batches.append(batch)
    return batches


def test_group_commit_waits_for_company_and_a_full_batch_does_not_wait(
    mosquitto: Mosquitto,
) -> None:
    async def main() -> None:
        connection = await connected(mosquitto, "t-group")
        publisher = Publisher(mosquitto.host, mosquitto.port)
        try:
            # Published back to back, well within the wait: one batch.
            for i in range(5):
                publisher.publish(f"t/{i}", str(i))
            assert publisher.flush(10)
            batches = await _collect(connection, 5, 1000, wait_s=1.0)
            assert [[m.payload for m in b] for b in batches] == [[b"0", b"1", b"2", b"3", b"4"]]
            # A full batch is handed over at once: with a wait of an hour, only a full batch
            # can come back before the 30 s guard of _collect.
            for i in range(7):
                publisher.publish(f"t/{i}", str(i))
            assert publisher.flush(10)
            batches = await _collect(connection, 6, 3, wait_s=3600)
            assert [len(b) for b in batches] == [3, 3]
            rest = await _collect(connection, 1, 1000, wait_s=0.05)
            assert [m.payload for b in batches + rest for m in b] == [str(i).encode() for i in range(7)]  # fmt: skip
        finally:
            publisher.close()
            connection.stop()

    asyncio.run(main())


def test_burst_reads_keep_every_packet_whole_and_in_order(mosquitto: Mosquitto) -> None:
    """Packets cut from one recv() of 64 KiB: many small ones, and large ones that span
    several reads, in one stream; then the acks let a new connection of the same session see
    nothing again."""

    async def main() -> None:
        connection = await connected(mosquitto, "t-burst")
        publisher = Publisher(mosquitto.host, mosquitto.port)
        rng = random.Random(7)
        sent = []
        try:
            for i in range(400):
                size = rng.choice([0, 1, 10, 127, 128, 300, 16383, 16384, 70000, 200000])
                payload = bytes([i % 256]) * size
                sent.append((f"t/{i % 13}/x", payload))
                publisher.publish(f"t/{i % 13}/x", payload)
            assert publisher.flush(30)
            batches = await _collect(connection, len(sent), 50, wait_s=0.02)
            assert [(m.topic, m.payload) for b in batches for m in b] == sent
            assert all(len(b) <= 50 for b in batches)
            assert connection.stats.acked == len(sent)
        finally:
            publisher.close()
            connection.stop()
        # Everything was acknowledged: the resumed session has nothing to redeliver.
        await assert_nothing_redelivered(mosquitto, "t-burst")

    asyncio.run(main())


def test_shared_table_properties_decode_as_pahos_own() -> None:
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("a", "b"), ("c", "d")]
    props.MessageExpiryInterval = 30
    props.ContentType = "application/json"
    packed = props.pack()
    theirs, their_len = Properties(PacketTypes.PUBLISH).unpack(packed)
    ours, our_len = SharedTableProperties(PacketTypes.PUBLISH).unpack(packed)
    assert (ours.json(), our_len) == (theirs.json(), their_len)
    # unpack() clears what an earlier unpack set, as paho's does
    empty = Properties(PacketTypes.PUBLISH).pack()
    assert ours.unpack(empty)[0].json() == {}
    assert isinstance(ours, Properties)


def test_one_wakeup_sends_every_publish_with_a_single_wakeup(mosquitto: Mosquitto) -> None:
    """The Home Assistant state mirror's publishes: queued as usual, the client's thread woken
    once for all of them (it was once per publish), and every one reaches the broker."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from hub.bus.clients import new_client, one_wakeup

    got: list[bytes] = []
    watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id="t-watch")
    watcher.on_message = lambda c, u, m: got.append(m.payload)
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe("mirror/#", qos=1)
    watcher.loop_start()
    client = new_client("t-mirror", BrokerConfig(url=mosquitto.url))
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        wait_for(lambda: client.is_connected(), 10)
        time.sleep(0.3)  # the watcher's subscription is in place

        real = client._sockpairW
        counting = CountingWakeups(real)
        client._sockpairW = counting
        with one_wakeup(client):
            for i in range(50):
                client.publish(f"mirror/{i}", str(i), qos=1, retain=False)
        assert counting.sends == 1
        with one_wakeup(client):
            pass  # nothing published: nothing to wake the thread for
        assert counting.sends == 1
        client._sockpairW = real
        wait_for(lambda: len(got) == 50, 10, what="the 50 states")
        assert sorted(got, key=int) == [str(i).encode() for i in range(50)]
    finally:
        client.loop_stop()
        client.disconnect()
        watcher.loop_stop()
        watcher.disconnect()


def test_state_mirror_writes_a_batchs_states_itself_in_order(mosquitto: Mosquitto, tmp_path: Any) -> None:  # fmt: skip
    """The Home Assistant state mirror: a batch's sensor states go out as one write by the
    publishing thread, without waking the client's thread (it was woken once per batch); a
    QoS 1 publish in the middle of a batch (a node's availability) keeps its place; every
    state is retained on the broker as paho would have sent it."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from hub.ha.discovery import DiscoveryPublisher
    from hub.ha.settings import DiscoverySettings

    got: list[tuple[str, bytes]] = []
    watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id="t-watch-states")
    watcher.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    watcher.connect(mosquitto.host, mosquitto.port)
    watcher.subscribe([("hub/state/#", 1), ("hub/availability/#", 1)])
    watcher.loop_start()
    publisher = DiscoveryPublisher(
        DiscoverySettings(), BrokerConfig(url=mosquitto.url), "hub_t", tmp_path / "m.json", "t-ha"
    )
    publisher.start()
    try:
        assert publisher.wait_connected(10)
        publisher.wait_settled(10)
        time.sleep(0.3)  # the watcher's subscription is in place
        counting = CountingWakeups(publisher._client._sockpairW)
        publisher._client._sockpairW = counting
        with publisher.batch():
            for i in range(40):
                publisher.publish_state(f"air{i % 4}", "pm2_5", i + 0.5)
        assert counting.sends == 0
        wait_for(lambda: len(got) == 40, 10, what="the 40 states")
        assert got == [(f"hub/state/air{i % 4}/pm2_5", b"%.1f" % (i + 0.5)) for i in range(40)]

        got.clear()
        with publisher.batch():
            publisher.publish_state("air9", "co2", 800)
            publisher.publish_availability("air9", True)
            publisher.publish_state("air9", "co2", 801)
            publisher.publish_state("air9", "temperature", 21.25)
        assert counting.sends == 1  # the availability, through paho's thread
        wait_for(lambda: len(got) == 4, 10, what="the batch with an availability")
        assert got == [
            ("hub/state/air9/co2", b"800"),
            ("hub/availability/air9", b"online"),
            ("hub/state/air9/co2", b"801"),
            ("hub/state/air9/temperature", b"21.25"),
        ]
        assert publisher.stats.states_published == 43
        publisher._client._sockpairW = counting.sock
    finally:
        publisher.stop()
        watcher.loop_stop()
        watcher.disconnect()

    retained: dict[str, bytes] = {}
    later = paho.Client(CallbackAPIVersion.VERSION2, client_id="t-later")
    later.on_message = lambda c, u, m: retained.update({m.topic: m.payload}) if m.retain else None
    later.connect(mosquitto.host, mosquitto.port)
    later.subscribe("hub/state/#", 1)
    later.loop_start()
    try:
        wait_for(lambda: len(retained) == 6, 10, what="the retained states")
        assert retained["hub/state/air3/pm2_5"] == b"39.5"
        assert retained["hub/state/air9/co2"] == b"801"
    finally:
        later.loop_stop()
        later.disconnect()


def test_batch_wait_counts_the_time_the_sink_takes() -> None:
    """A batch falls due batch_wait minus what the sink took for the last ones (a peak that
    decays by a tenth a batch, at most half of batch_wait): batch_wait then bounds a message's
    age at commit, at 2,000 msgs/s as at 200, not only its wait before the commit starts."""
    connection = MqttConnection(BrokerConfig(), ["t/#"], client_id="t-budget")
    connection._batch_wait = 0.040
    assert connection._wait_now() == pytest.approx(0.040)

    def batch_that_took(seconds: float) -> None:
        connection._taken_at = time.monotonic() - seconds
        connection.batch_done()

    batch_that_took(0.004)
    assert connection._wait_now() == pytest.approx(0.036, abs=0.0005)
    batch_that_took(0.001)  # a quick one: the peak decays, it is not forgotten
    assert connection._wait_now() == pytest.approx(0.040 - 0.0036, abs=0.0005)
    batch_that_took(0.500)  # a stall of the store: never less than half of batch_wait
    assert connection._wait_now() == pytest.approx(0.020)
    for _ in range(60):
        batch_that_took(0.001)
    assert connection._wait_now() == pytest.approx(0.039, abs=0.0005)


def test_batch_size_cuts_the_wait_at_the_last_batchs_rate() -> None:
    """A batch falls due when about `due_size` messages have come in at the last hand-off's
    rate, if that is sooner than batch_wait: at 2,000 msgs/s and 50 a batch, 25 ms; after an
    idle spell or at a trickle batch_wait applies. Without a due size, batch_max is it."""
    connection = MqttConnection(BrokerConfig(), ["t/#"], client_id="t-size")
    connection._set_batching(5000, 0.045, 50)

    def handed_over(messages: int, since: float, first_age: float = 0.0) -> None:
        """`messages` handed over `since` s after the last batch; the first was received
        `first_age` s ago (0: read in one burst at the end of a window)."""
        connection._taken_at = time.monotonic() - since
        received_ms = int((time.time() - first_age) * 1000)
        batch = [Message("t/a", b"1", 1, 1, False, False, received_ms)] * messages
        connection._count_rate(batch)

    assert connection._wait_now() == pytest.approx(0.045)  # no rate seen yet
    handed_over(100, 0.050)  # 2,000 msgs/s
    assert connection._wait_now() == pytest.approx(0.025, abs=0.001)
    handed_over(9, 0.045)  # 200 msgs/s: 50 would take 250 ms
    assert connection._wait_now() == pytest.approx(0.045)
    handed_over(1, 600.0, first_age=0.045)  # the first message after ten idle minutes
    assert connection._wait_now() == pytest.approx(0.045)
    # A stream that begins after a quiet spell: its rate is counted from its first message
    # (received 45 ms ago, the rest read just now), not from the last batch an hour ago.
    handed_over(90, 3600.0, first_age=0.045)
    assert connection._wait_now() == pytest.approx(0.025, abs=0.001)
    connection._set_batching(5000, 0.045, 9000)  # never more than batch_max
    assert connection._due_size == 5000
    connection._set_batching(5000, 0.045, 50)
    handed_over(5000, 0.010)  # a backlog
    assert connection._wait_now() < 0.001
    connection._set_batching(5000, 0.045, None)  # no due size: batch_max, no rate rule
    assert connection._wait_now() == pytest.approx(0.045)
    handed_over(5000, 0.010)
    assert connection._wait_now() == pytest.approx(0.045)


def test_the_safety_net_counts_only_a_batch_nobody_handed_over() -> None:
    """Ingest's check every 5 s hands over any due batch, but calls it missed (a bug, logged)
    only when its oldest message is older than batch_wait + grace: a batch that fell due a
    moment ago is on its way (paho's thread pauses to the deadline it worked out before a
    slow commit shortened the wait)."""
    connection = MqttConnection(BrokerConfig(), ["t/#"], client_id="t-net")
    handed: list[list[Message]] = []
    connection.deliver_batches(handed.append, 5000, 0.045, 50)
    now_ms = time.time_ns() // 1_000_000

    def queued(age_ms: int) -> None:
        connection._inbox.append(Message("t/a", b"1", 1, 1, False, False, now_ms - age_ms))

    assert connection.offer_overdue(1.0) is False  # nothing there
    queued(60)  # due (45 ms) a moment ago
    assert connection.offer_overdue(1.0) is False
    assert [len(b) for b in handed] == [1]  # handed over all the same
    connection.batch_done()
    queued(10)  # not due yet: stays
    assert connection.offer_overdue(1.0) is False
    assert [len(b) for b in handed] == [1]
    connection._inbox.clear()
    queued(5_000)  # left behind
    assert connection.offer_overdue(1.0) is True
    assert [len(b) for b in handed] == [1, 1]
