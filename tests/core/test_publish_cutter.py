"""The burst reader's own PUBLISH decoder (hub/bus/mqtt.py `_cut_publishes`) against a byte
stream written into a socket: every PUBLISH arrives once, in order, with its topic, payload,
QoS, packet id and flags, however the stream is cut by the reads (a packet cut in two goes
through paho's own reader, as do other packets such as PINGRESP)."""

from __future__ import annotations

import socket
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from hub.bus.mqtt import BurstReadingClient


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _publish(topic: str, payload: bytes, qos: int, mid: int, dup: bool, retain: bool,
             v5: bool, props: bytes) -> bytes:  # fmt: skip
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name
    if qos:
        body += mid.to_bytes(2, "big")
    if v5:
        body += _varint(len(props)) + props
    body += payload
    header = 0x30 | (dup << 3) | (qos << 1) | retain
    return bytes([header]) + _varint(len(body)) + body


PINGRESP = b"\xd0\x00"
# MQTT 5 properties a broker may put on a PUBLISH: message expiry, a user property
PROPS = [b"", b"\x02\x00\x00\x00\x3c", b"\x26\x00\x01k\x00\x02vv"]

publishes = st.lists(
    st.tuples(
        st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
        st.one_of(st.binary(max_size=300), st.sampled_from([b"x" * 20_000, b""])),
        st.integers(0, 1),  # QoS 2 is delivered on PUBREL: paho's path, not a cut
        st.integers(1, 65535),
        st.booleans(),
        st.booleans(),
        st.sampled_from(PROPS),
        st.booleans(),  # a PINGRESP after it
    ),
    min_size=1,
    max_size=25,
)


def _client(v5: bool) -> tuple[BurstReadingClient, socket.socket, list[tuple[Any, ...]]]:
    protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    client = BurstReadingClient(CallbackAPIVersion.VERSION2, "cutter", protocol=protocol,
                                manual_ack=True)  # fmt: skip
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours  # type: ignore[assignment]
    received: list[tuple[Any, ...]] = []
    client.publish_received = lambda *fields: received.append(("cut", *fields))
    client.on_message = lambda c, u, m: received.append(
        ("paho", m.topic, m.payload, m.qos, m.mid, m.dup, m.retain)
    )
    return client, theirs, received


@settings(max_examples=150, deadline=None)
@given(publishes, st.booleans(), st.lists(st.integers(1, 4000), min_size=1, max_size=40))
def test_every_publish_once_in_order_however_the_stream_is_cut(
    packets: list[tuple[Any, ...]], v5: bool, cuts: list[int]
) -> None:
    client, theirs, received = _client(v5)
    stream = bytearray()
    expected = []
    for topic, payload, qos, mid, dup, retain, props, ping in packets:
        stream += _publish(topic, payload, qos, mid, dup, retain, v5, props if v5 else b"")
        expected.append((topic, payload, qos, mid if qos else 0, dup, retain))
        if ping:
            stream += PINGRESP
    try:
        at, i = 0, 0
        while at < len(stream):
            size = cuts[i % len(cuts)]
            theirs.sendall(stream[at : at + size])
            at += size
            i += 1
            client.loop_read()
        for _ in range(3):
            client.loop_read()
        assert [r[1:] for r in received] == expected
    finally:
        theirs.close()
        client._sock.close()  # type: ignore[union-attr]


def test_whole_packets_are_cut_without_paho() -> None:
    client, theirs, received = _client(v5=True)
    try:
        stream = b"".join(
            _publish(f"n{i}/sensor/co2/state", b"%d" % i, i % 2, i + 1, False, i == 3, True,
                     PROPS[i % 3]) + (PINGRESP if i % 4 == 0 else b"")
            for i in range(200)
        )  # fmt: skip
        theirs.sendall(stream)
        client.loop_read()
        assert len(received) == 200
        assert {r[0] for r in received} == {"cut"}
        assert received[3][1:] == ("n3/sensor/co2/state", b"3", 1, 4, False, True)
    finally:
        theirs.close()


def test_a_malformed_publish_is_left_to_paho() -> None:
    """A topic length past the packet's end: not cut; paho's reader calls it a protocol error
    (and drops the connection), as it did before the cutter existed."""
    client, theirs, received = _client(v5=False)
    try:
        theirs.sendall(b"\x30\x05\x00\x09abc")
        rc = client.loop_read()
        assert received == []
        assert rc != 0
    finally:
        theirs.close()
