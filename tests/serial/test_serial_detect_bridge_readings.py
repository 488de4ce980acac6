from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from hub.bus.hub_json import decode, encode
from hub.sources.serial.bridge_lines import BridgeLineFramer, nmea_checksum
from hub.sources.serial.capture import read_capture
from hub.sources.serial.detect import detect
from hub.sources.serial.frames import BridgeEvent, BridgeValues, KissFrame
from hub.sources.serial.hobbywing import HobbywingV5Framer
from hub.sources.serial.kiss import encode_kiss
from hub.sources.serial.readings import ReadingMaker
from hub.sources.serial.settings import EscSettings
from tests.serial import vectors as v
from tests.serial.helpers import every_chunking

V4 = Path(__file__).resolve().parents[1] / "data" / "hobbywing-platinum-v4.csv"


def kiss_stream(n: int) -> list[tuple[float, bytes]]:
    return [(0.03 * i, encode_kiss(30, 1600 + i, 100, i, 10)) for i in range(n)]


def test_detect_locks_on_kiss_at_115200() -> None:
    asked: list[int] = []

    def read(baud: int) -> list[tuple[float, bytes]]:
        asked.append(baud)
        return kiss_stream(20) if baud == 115200 else []

    result = detect(read)
    assert (result.protocol, result.baud, asked) == ("kiss", 115200, [115200])
    assert "found kiss at 115200" in result.describe()


def test_detect_falls_back_to_19200_for_hobbywing_v4() -> None:
    _, rows = read_capture(V4)
    chunks = list(rows)
    garbage = [(0.0, bytes(range(256)) * 4)]  # what 19200-baud data looks like read at 115200
    result = detect(lambda baud: chunks if baud == 19200 else garbage)
    assert (result.protocol, result.baud) == ("hobbywing-v4", 19200)


def test_detect_v5_and_nothing() -> None:
    frames = [(0.1 * i, v.H5_3) for i in range(5)]
    assert detect(lambda baud: frames if baud == 115200 else []).protocol == "hobbywing-v5"
    nothing = detect(lambda baud: [(0.0, bytes(500))])
    assert nothing.protocol is None and nothing.baud is None


LINES = (
    b"""{"v":1,"t_us":123456789,"src":"esc0","proto":"kiss","raw":"2306 9004 D202 3701 0076"}
{"v":1,"t_us":123457001,"src":"esc0","proto":"kiss","dec":{"temp_c":35,"volt_v":16.80,"curr_a":12.34,"mah":567,"erpm":25600}}
{"v":1,"t_us":123460000,"src":"cells","dec":{"cells_v":[4.11,4.10,4.12,4.09,4.11,4.10]}}
{"v":1,"t_us":123470000,"src":"bridge","evt":"crc_error","proto":"hw5","count":3}
not json at all
{"v":2,"t_us":1}
#t_us,src,proto,hex
123480000,esc1,hw5,"""
    + v.H5_3.hex().encode()
    + b"""
123490000,esc0,kiss,23069004D20237010076*00
"""
)


def test_bridge_lines() -> None:
    frames = every_chunking(BridgeLineFramer, LINES)
    kinds = [(type(d.frame).__name__, d.src) for d in frames]
    assert kinds == [
        ("KissFrame", "esc0"), ("BridgeValues", "esc0"), ("BridgeValues", "cells"),
        ("BridgeEvent", "bridge"), ("HobbywingV5Frame", "esc1"),
    ]  # fmt: skip
    framer = BridgeLineFramer()
    framer.feed(LINES, 1000.0)
    assert dict(framer.stats.bad) == {"bad_csv": 1, "unsupported_version": 1, "checksum": 1}
    values = frames[1].frame
    assert isinstance(values, BridgeValues)
    si = values.si(EscSettings(motor_poles=14))
    assert si["pack_voltage"] == 16.8 and si["rpm"] == pytest.approx(3657.14, abs=0.01)
    cells = frames[2].frame.si(EscSettings())
    assert (cells["cell_voltage_min"], cells["cell_voltage_max"]) == (4.09, 4.12)
    assert isinstance(frames[3].frame, BridgeEvent) and frames[3].frame.detail["count"] == 3


def test_bridge_csv_checksum_and_time_mapping() -> None:
    def line(t_us: int) -> bytes:
        row = f"{t_us},esc0,kiss,23069004D20237010076"
        return f"{row}*{nmea_checksum(row):02X}\n".encode()

    framer = BridgeLineFramer()
    (first,) = framer.feed(line(123_490_000), 5000.0)
    assert isinstance(first.frame, KissFrame) and first.t == 5000.0
    (second,) = framer.feed(line(123_500_000), 5000.5)
    assert second.t == pytest.approx(5000.01)  # bridge clock, mapped by the first offset


def test_bridge_line_too_long_is_dropped() -> None:
    framer = BridgeLineFramer()
    assert framer.feed(b"x" * 5000, 0.0) == []
    frames = framer.feed(b"yyy\n" + LINES[:86] + b"\n", 0.0)
    assert len(frames) == 1 and framer.stats.bad["line_too_long"] == 1


def test_readings_and_fault_events_round_trip_hub_json() -> None:
    maker = ReadingMaker("buggy", EscSettings(motor_poles=4))
    ok = bytearray(v.H5_3)
    ok[12] = 0
    from hub.sources.serial.hobbywing import encode_v5

    ok_frame = encode_v5(bytes(ok[:30]))
    framer = HobbywingV5Framer()
    decoded = framer.feed(ok_frame + v.H5_3 + v.H5_3 + ok_frame, 1_732_262_400.0)
    converted = [maker.convert(d) for d in decoded]
    events = [e.text for _, evs in converted for e in evs]
    assert events == ["low voltage", "ok"]  # on change only, none for the first clean frame
    readings, _ = converted[1]
    by_metric = {r.metric: r for r in readings}
    assert by_metric["pack_voltage"].value == pytest.approx(19.1)
    assert by_metric["pack_voltage"].unit == "V" and by_metric["esc_temperature"].value == 35
    assert by_metric["duty_cycle"].unit == "%"
    assert by_metric["pack_voltage"].timestamp_ms == 1_732_262_400_000
    payload = encode(readings, converted[1][1])
    back, back_events = decode("buggy", payload, 1_732_262_400_000, 1_732_262_400_000)
    assert {r.metric for r in back} == set(by_metric) and back_events[0].text == "low voltage"
    assert orjson.loads(payload)["source"] == "serial"
