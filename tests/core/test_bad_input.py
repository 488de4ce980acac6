"""Bad input through a real broker into a real hub: each kind is counted, kept as a dead
letter with its reason and raw payload, and the good messages around it are stored."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import orjson
import pytest

from tests.support.hubproc import HubProcess, Publisher, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.mosquitto

NOW_MS = int(time.time() * 1000)

BAD: list[tuple[str, str, bytes]] = [
    ("invalid_utf8", "hub/readings/rig", b"\xff\xfe\xfd{"),
    ("invalid_json", "hub/readings/rig", b'{"values": {"current": 1'),
    ("not_an_object", "hub/readings/rig", b'[{"values": {"current": 1}}]'),
    ("not_a_number", "hub/readings/rig", b'{"values": {"current": NaN}}'),
    ("not_a_number", "hub/readings/rig", b'{"values": {"current": Infinity}}'),
    ("not_a_number", "hub/readings/rig", b'{"values": {"current": "12.5"}}'),
    (
        "timestamp_out_of_range",
        "hub/readings/rig",
        orjson.dumps({"ts": 946_684_799, "values": {"current": 1}}),
    ),
    (
        "timestamp_out_of_range",
        "hub/readings/rig",
        orjson.dumps({"ts_ms": NOW_MS + 2 * 86_400_000, "values": {"current": 1}}),
    ),
    (
        "payload_too_large",
        "hub/readings/rig",
        b'{"values": {"current": 1}, "pad": "' + b"x" * (1 << 20) + b'"}',
    ),
    ("unknown_topic", "hub/readings/rig/extra", orjson.dumps({"values": {"current": 1}})),
    ("invalid_topic", "hub/readings/a/b/c/d/e/f/g/h", b"{}"),  # 10 levels
    ("invalid_name", "küche/sensor/co2/state", b"612"),
    ("not_a_number", "kitchen/sensor/co2/state", b"nan"),
    ("not_a_number", "kitchen/sensor/co2/state", b"None"),
    ("unknown_sensor", "kitchen/sensor/mystery_gadget/state", b"5"),
    ("invalid_json", "homeassistant/sensor/kitchen/co2/config", b"{broken"),
    ("invalid_discovery", "homeassistant/sensor/kitchen/x/config", b'{"name": "no state topic"}'),
]


def good(i: int) -> tuple[str, bytes]:
    return "hub/readings/good", orjson.dumps(
        {"ts_ms": NOW_MS - 10_000 + i, "values": {"current": float(i)}}
    )


def test_bad_input_is_counted_kept_and_never_stops_the_hub(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    hub = HubProcess(tmp_path, mosquitto.url).start()
    publisher = Publisher(mosquitto.host, mosquitto.port)
    index = 0
    for _, topic, payload in BAD:
        publisher.publish(*good(index))
        index += 1
        publisher.publish(topic, payload)
    publisher.publish(*good(index))
    index += 1
    # ESPHome binary and text sensors are states, not errors
    publisher.publish("hall/binary_sensor/motion/state", "ON")
    publisher.publish("hall/binary_sensor/motion/state", "OFF")
    publisher.publish("hall/text_sensor/wifi_ssid/state", "lab-net")
    assert publisher.flush()
    publisher.close()

    wait_for(
        lambda: len(hub.query("SELECT id FROM dead_letters")) >= len(BAD),
        30,
        what="every dead letter",
    )
    wait_for(
        lambda: hub.query("SELECT count(*) FROM events")[0][0] >= 3, 30, what="binary/text events"
    )
    time.sleep(0.5)
    letters = hub.query(
        "SELECT reason, topic, payload, detail, payload_bytes, payload_sha256 FROM dead_letters ORDER BY id"
    )
    # Payloads up to store.dead_letters.max_payload (64 KiB) are kept whole; a larger one
    # keeps its first 64 KiB with its full length and hash (any publisher can send them).
    assert [(r[0], r[1], bytes(r[2])) for r in letters] == [
        (reason, topic, payload[:65536]) for reason, topic, payload in BAD
    ]
    assert [(r[4], r[5]) for r in letters] == [
        (len(payload), hashlib.sha256(payload).hexdigest()) for _, _, payload in BAD
    ]
    assert all(r[3] for r in letters), "every dead letter says why"

    goods = sorted(
        v
        for (v,) in hub.query(
            "SELECT x.value FROM samples x JOIN series s ON s.id = x.series_id WHERE s.device = 'good'"
        )
    )
    assert goods == [float(i) for i in range(index)]
    motion = hub.query(
        "SELECT x.value FROM samples x JOIN series s ON s.id = x.series_id WHERE s.device = 'hall' AND s.metric = 'motion' ORDER BY x.ts"
    )
    assert [v for (v,) in motion] == [1.0, 0.0]
    events = hub.query("SELECT name, text FROM events WHERE device = 'hall' ORDER BY id")
    assert events == [("motion", "ON"), ("motion", "OFF"), ("wifi_ssid", "lab-net")]

    status = hub.status()
    expected: dict[str, int] = {}
    for reason, _, _ in BAD:
        expected[reason] = expected.get(reason, 0) + 1
    wait_for(lambda: hub.status()["ingest"]["rejected"] == expected, 5, what="counters per reason")
    assert hub.proc is not None and hub.proc.poll() is None, "the hub keeps running"
    assert "Traceback" not in hub.log()
    assert status["broker"]["state"] == "connected"
    assert hub.stop() == 0
