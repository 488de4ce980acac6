"""Every spec §8 vector decodes to the documented values, whole, byte by byte and repeated."""

from __future__ import annotations

import pytest

from hub.sources.serial.frames import (
    HobbywingFocFrame,
    HobbywingV3Frame,
    HobbywingV4Frame,
    HobbywingV4Info,
    HobbywingV5Frame,
    KissFrame,
    VescPacket,
    VescValues,
)
from hub.sources.serial.hobbywing import (
    HobbywingFocFramer,
    HobbywingV3Framer,
    HobbywingV4Framer,
    HobbywingV5Framer,
)
from hub.sources.serial.kiss import KissFramer, encode_kiss
from hub.sources.serial.settings import ARDUPILOT_V4_VOLT_PER_COUNT, EscSettings
from hub.sources.serial.vesc import VescFramer, decode_get_values, encode_packet, get_values_request
from tests.serial import vectors as v
from tests.serial.helpers import every_chunking

S14 = EscSettings(motor_poles=14)
S4 = EscSettings(motor_poles=4)


def only(frames: list, cls: type) -> object:
    assert len(frames) == 1, frames
    assert isinstance(frames[0].frame, cls)
    return frames[0].frame


# --- KISS ------------------------------------------------------------------------------------
def test_k1() -> None:
    frame = only(every_chunking(KissFramer, v.K1), KissFrame)
    si = frame.si(S14)
    assert si["esc_temperature"] == 35
    assert si["pack_voltage"] == pytest.approx(16.80)
    assert si["current"] == pytest.approx(12.34)
    assert si["consumed_mah"] == 567
    assert si["erpm"] == 25_600
    assert si["rpm"] == pytest.approx(3657.14, abs=0.01)
    assert frame.si(S4)["rpm"] == 12_800
    assert "rpm" not in frame.si(EscSettings())  # no poles configured: eRPM only


def test_k2_k3() -> None:
    k2 = only(every_chunking(KissFramer, v.K2), KissFrame).si(S14)
    assert (k2["esc_temperature"], k2["pack_voltage"], k2["current"], k2["erpm"]) == (
        25,
        25.2,
        0,
        0,
    )
    k3 = only(every_chunking(KissFramer, v.K3), KissFrame).si(S14)
    assert k3["esc_temperature"] == -5  # int8, not 251
    assert k3["pack_voltage"] == pytest.approx(11.10)
    assert (k3["current"], k3["consumed_mah"], k3["erpm"]) == (1.0, 1, 100)


def test_k5_rejected_by_crc() -> None:
    framer = KissFramer()
    assert every_chunking(KissFramer, v.K5) == []
    framer.feed(v.K5)
    framer.flush()
    assert framer.stats.bad["crc"] >= 1
    assert framer.stats.frames == 0


def test_k6_sliding_resync() -> None:
    frames = every_chunking(KissFramer, v.K6)
    assert [f.frame.temperature_c for f in frames] == [35, 36]
    framer = KissFramer()
    framer.feed(v.K6)
    assert framer.stats.skipped_bytes == 3  # frames found at offsets 3 and 13


def test_kiss_concatenated_and_encoder() -> None:
    stream = v.K1 + v.K2 + v.K3 + v.K1
    frames = every_chunking(KissFramer, stream)
    assert len(frames) == 4
    assert encode_kiss(35, 1680, 1234, 567, 256) == v.K1
    assert encode_kiss(-5, 1110, 100, 1, 1) == v.K3
    assert all(d.verified for d in frames[1:])


def test_kiss_implausible_voltage_rejected() -> None:
    framer = KissFramer()
    assert framer.feed(encode_kiss(30, 9000, 0, 0, 0)) == []  # 90 V
    assert framer.stats.bad["implausible"] == 1


# --- Hobbywing V4 ----------------------------------------------------------------------------
def test_h4_1_info_frame() -> None:
    info = only(every_chunking(HobbywingV4Framer, v.H4_1), HobbywingV4Info)
    assert info.throttle_range == 1000
    assert info.volt_per_count == pytest.approx(0.0087912, rel=1e-5)
    assert info.amp_per_count is None  # no current sensor


def test_h4_5_info_constants() -> None:
    info = only(every_chunking(HobbywingV4Framer, v.H4_5), HobbywingV4Info)
    assert info.volt_per_count == pytest.approx(0.015385, rel=1e-4)
    assert info.amp_per_count == pytest.approx(0.16393, rel=1e-4)
    assert info.current_offset == pytest.approx(30.5, rel=1e-3)


def test_h4_2_idle_data_with_info_scale() -> None:
    frames = every_chunking(HobbywingV4Framer, v.H4_1 + v.H4_2)
    assert len(frames) == 2  # the trailing 0xB9 is no frame and no junk
    data = frames[1].frame
    assert isinstance(data, HobbywingV4Frame)
    si = data.si(S14)
    assert data.seq == 817
    assert si["throttle"] == 0 and si["erpm"] == 0
    assert data.voltage_adc == 1356
    assert si["pack_voltage"] == pytest.approx(11.92, abs=0.005)
    assert si["esc_temperature"] == pytest.approx(29.5, abs=0.05)
    assert "esc_temperature_2" not in si  # ADC 0: no sensor
    assert "current" not in si  # the info frame says no current sensor


def test_h4_2_without_info_uses_ardupilot_divisor() -> None:
    data = only(every_chunking(HobbywingV4Framer, v.H4_2), HobbywingV4Frame)
    assert data.si(S14)["pack_voltage"] == pytest.approx(12.13, abs=0.005)
    assert pytest.approx(12.126, abs=0.001) == 1356 * ARDUPILOT_V4_VOLT_PER_COUNT
    calibrated = data.si(EscSettings(v4_volt_per_count=8 / 910, voltage_calibration=1.01))
    assert calibrated["pack_voltage"] == pytest.approx(11.92 * 1.01, abs=0.01)


def test_h4_3_h4_4_running() -> None:
    frames = every_chunking(HobbywingV4Framer, v.H4_1 + v.H4_3 + v.H4_4)
    h3, h4 = (d.frame for d in frames[1:])
    s3, s4 = h3.si(S14), h4.si(S14)
    assert h3.seq == 828 and s3["throttle"] == 100.0 and s3["duty_cycle"] == pytest.approx(3.5)
    assert s3["erpm"] == 1251 and s3["rpm"] == pytest.approx(178.7, abs=0.05)
    assert s3["pack_voltage"] == pytest.approx(11.91, abs=0.005)
    assert s3["esc_temperature"] == pytest.approx(29.5, abs=0.05)
    assert s3["esc_temperature_2"] == pytest.approx(29.5, abs=0.05)
    assert h4.seq == 840 and s4["duty_cycle"] == pytest.approx(4.6) and s4["erpm"] == 3594


def test_h4_current_with_sensor() -> None:
    frames = every_chunking(HobbywingV4Framer, v.H4_5 + v.H4_3)
    si = frames[1].frame.si(S14)
    assert si["current"] == 0.0  # ADC 0 is below the 30.5-count offset: clamped
    stopped = bytearray(v.H4_3)
    stopped[4:6] = b"\x00\x00"
    stopped[13:15] = (500).to_bytes(2, "big")
    frames = every_chunking(HobbywingV4Framer, v.H4_5 + bytes(stopped))
    assert frames[1].frame.si(S14)["current"] == 0.0  # throttle 0: stale current is zeroed


def test_h4_implausible_rejected() -> None:
    bad = bytearray(v.H4_3)
    bad[11] = 0x20  # voltage ADC high byte beyond 12 bits
    framer = HobbywingV4Framer()
    assert framer.feed(bytes(bad)) == []
    assert framer.stats.bad["implausible"] == 1


# --- Hobbywing V3 ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "seq", "thr", "pwm", "period", "erpm"),
    [
        (v.H3_1, 1, 107, 10, 35_314, 1699),
        (v.H3_2, 28, 107, 21, 40_843, 1469),
        (v.H3_3, 4096, 200, 180, 600, 100_000),
    ],
)
def test_h3(data: bytes, seq: int, thr: int, pwm: int, period: int, erpm: int) -> None:
    frame = only(every_chunking(HobbywingV3Framer, data), HobbywingV3Frame)
    assert (frame.seq, frame.throttle_raw, frame.pwm_raw, frame.period_us) == (
        seq,
        thr,
        pwm,
        period,
    )
    assert round(frame.erpm) == erpm


def test_h3_1_rpm_at_14_poles() -> None:
    frame = only(every_chunking(HobbywingV3Framer, v.H3_1), HobbywingV3Frame)
    assert frame.si(S14)["rpm"] == pytest.approx(242.7, abs=0.05)


def test_h3_counter_continuity_marks_verified() -> None:
    second = v.H3_1[:3] + b"\x02" + v.H3_1[4:]
    frames = every_chunking(HobbywingV3Framer, v.H3_1 + second + v.H3_2)
    assert [d.verified for d in frames] == [False, True, False]


# --- HW-FOC ----------------------------------------------------------------------------------
def test_hf_1() -> None:
    frame = only(every_chunking(HobbywingFocFramer, v.HF_1), HobbywingFocFrame)
    si = frame.si(S14)
    assert frame.seq == 1474
    assert si["pack_voltage"] == pytest.approx(24.7)
    assert frame.current_raw == -1
    assert si["current"] == pytest.approx(-1 / 64)
    assert EscSettings(foc_amp_per_count=0.01).foc_amp_per_count == 0.01
    assert si["esc_temperature"] == 28 and si["capacitor_temperature"] == 26
    assert si["status"] == 0


def test_hf_2_and_concatenation() -> None:
    frames = every_chunking(HobbywingFocFramer, v.HF_1 + v.HF_2 + v.HF_1)
    assert [d.frame.seq for d in frames] == [1474, 1475, 1474]


def test_hf_bad_checksum_rejected() -> None:
    bad = bytearray(v.HF_1)
    bad[13] ^= 0x01
    framer = HobbywingFocFramer()
    assert framer.feed(bytes(bad)) == []
    assert framer.stats.bad["checksum"] == 1


def test_hf_info_frame_skipped() -> None:
    info = bytes([0x9B, 0x4C, 0x01, 0x01]) + b"XR_FOC_ESC      HW577_KZ1_V1.1  "
    frames = every_chunking(HobbywingFocFramer, info + v.HF_1)
    assert [d.frame.seq for d in frames] == [1474]


def test_foc_rpm_scaling_is_a_setting() -> None:
    body = bytearray(v.HF_1[:22])
    body[10:12] = (700).to_bytes(2, "big")
    from hub.sources.serial.hobbywing import encode_foc

    frame = only(every_chunking(HobbywingFocFramer, encode_foc(bytes(body))), HobbywingFocFrame)
    assert frame.si(S14)["erpm"] == 7000 and frame.si(S14)["rpm"] == 1000  # doc: x*10/pole pairs
    ardupilot = EscSettings(motor_poles=14, foc_erpm_per_count=5)
    assert frame.si(ardupilot)["rpm"] == 500  # ArduPilot: x*5/7 = x*10/pole count


# --- Hobbywing V5 / car ----------------------------------------------------------------------
def test_h5_1_as_published_fails_crc() -> None:
    framer = HobbywingV5Framer()
    assert framer.feed(v.H5_1) == []
    assert framer.stats.bad["crc"] == 1


def test_h5_1_layout_with_corrected_byte() -> None:
    frame = only(every_chunking(HobbywingV5Framer, v.H5_1_FIXED), HobbywingV5Frame)
    si = frame.si(EscSettings(motor_poles=4))
    assert si["throttle"] == 47 and si["duty_cycle"] == 48
    assert si["direction"] == "forward/reverse"
    assert si["erpm"] == 12_690
    assert si["pack_voltage"] == pytest.approx(7.5)
    assert "current" not in si  # 0xFFFF: no current sensor
    assert si["esc_temperature"] == 37 and si["motor_temperature"] == 34
    assert si["faults"] == []


def test_h5_3_low_voltage_fault() -> None:
    frame = only(every_chunking(HobbywingV5Framer, v.H5_3), HobbywingV5Frame)
    si = frame.si(S14)
    assert frame.fault_bits == 0x20 and si["faults"] == ["low voltage"]
    assert si["pack_voltage"] == pytest.approx(19.1)
    assert si["esc_temperature"] == 35
    assert "motor_temperature" not in si


def test_h5_request_frames_are_not_telemetry() -> None:
    frames = every_chunking(HobbywingV5Framer, v.H5_4 + v.H5_3 + v.H5_3)
    assert len(frames) == 2


# --- VESC ------------------------------------------------------------------------------------
def test_v1_v2_requests() -> None:
    assert get_values_request() == v.V1
    assert encode_packet(b"\x00") == v.V2
    frames = every_chunking(VescFramer, v.V1 + v.V2)
    assert [(d.frame.command, d.frame.payload) for d in frames] == [(4, b""), (0, b"")]
    assert all(isinstance(d.frame, VescPacket) for d in frames)


def test_v3_get_values() -> None:
    frame = only(every_chunking(VescFramer, v.V3), VescValues)
    val = frame.values
    expected = {
        "temp_fet": 41.3, "temp_motor": 63.5, "avg_motor_current": 45.67,
        "avg_input_current": 30.12, "avg_id": -1.5, "avg_iq": 45.0, "duty_cycle": 0.873,
        "rpm": 35_000, "v_in": 22.4, "amp_hours": 1.2345, "amp_hours_charged": 0.0123,
        "watt_hours": 27.5, "watt_hours_charged": 0.25, "tachometer": 123_456,
        "tachometer_abs": 234_567, "fault_code": 0, "pid_pos": 123.456789, "controller_id": 0,
        "temp_mos1": 40.1, "temp_mos2": 41.3, "temp_mos3": 39.9, "avg_vd": -0.5, "avg_vq": 19.2,
        "status": 0,
    }  # fmt: skip
    assert val == pytest.approx(expected)
    si = frame.si(S14)
    assert si["rpm"] == pytest.approx(5000)
    assert si["pack_voltage"] == pytest.approx(22.4) and si["current"] == pytest.approx(30.12)
    assert si["consumed_mah"] == pytest.approx(1234.5) and si["fault"] == "NONE"


def test_v5_slide_by_one_with_timeout() -> None:
    second = encode_packet(v.V3_PAYLOAD[:-1] + b"\x01")  # status byte differs
    stream = bytes.fromhex("03 00 FF 02") + v.V3 + bytes.fromhex("AA 02 05") + second
    assert len(second) == 79
    framer = VescFramer()
    assert framer.feed(stream, 0.0) == []  # waiting for a 260-byte packet that never comes
    frames = framer.feed(b"", 1.0)  # silence: abandon it, slide on
    assert [d.frame.values["status"] for d in frames] == [0, 1]
    assert framer.stats.skipped_bytes == 4 + 3


def test_v6_long_frame() -> None:
    payload = bytes([50]) + bytes(range(256)) + bytes(43)
    packet = encode_packet(payload)
    assert packet[:3] == bytes([3, 0x01, 0x2C])
    frames = every_chunking(VescFramer, packet + v.V3)
    assert isinstance(frames[0].frame, VescPacket) and frames[0].frame.command == 50
    assert len(frames[0].frame.payload) == 299 and isinstance(frames[1].frame, VescValues)


def test_v7_old_firmware_stops_after_fault_code() -> None:
    payload = v.V3_PAYLOAD[:54]
    values = decode_get_values(payload)
    assert list(values)[-1] == "fault_code"
    frame = only(every_chunking(VescFramer, encode_packet(payload)), VescValues)
    assert "temp_mos1" not in frame.values and frame.values["rpm"] == 35_000


def test_vesc_corruption_rejected() -> None:
    bad = bytearray(v.V3)
    bad[20] ^= 0x10
    framer = VescFramer()
    assert framer.feed(bytes(bad)) == []
    assert framer.stats.bad["crc"] == 1
    framer = VescFramer()
    assert framer.feed(v.V3[:-1] + b"\x04") == []
    assert framer.stats.bad["end_byte"] == 1
