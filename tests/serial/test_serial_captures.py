"""The real Hobbywing captures (tests/data, see its README) through the decoders and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hub.cli.serial import serial_group
from hub.sources.serial.capture import CaptureWriter, read_capture
from hub.sources.serial.frames import HobbywingV3Frame, HobbywingV4Frame, HobbywingV4Info
from hub.sources.serial.replay import parse_speed, replay
from hub.sources.serial.settings import EscSettings

CAPTURES = Path(__file__).resolve().parents[1] / "data"  # inside the checkout
V4 = CAPTURES / "hobbywing-platinum-v4.csv"
V3 = CAPTURES / "hobbywing-platinum-pro-v3.csv"
TESTDATA = Path(__file__).parent / "testdata"
S14 = EscSettings(motor_poles=14)


def test_v4_capture_frames_and_values() -> None:
    state, frames_iter = replay(V4)
    frames = list(frames_iter)
    assert state.protocol == "hobbywing-v4" and state.detected == "hobbywing-v4"
    info = [d for d in frames if isinstance(d.frame, HobbywingV4Info)]
    data = [d for d in frames if isinstance(d.frame, HobbywingV4Frame)]
    assert (len(info), len(data)) == (26, 297)
    assert state.stats.bytes == 6007 and state.stats.skipped_bytes == 0 and not state.stats.bad
    seqs = [d.frame.seq for d in data]
    assert seqs == list(range(817, 817 + 297))  # no false frame, none lost
    by_seq = {d.frame.seq: d for d in data}
    h2 = by_seq[817]
    assert h2.t == pytest.approx(0.266, abs=0.01)
    assert h2.frame.si(S14)["pack_voltage"] == pytest.approx(11.92, abs=0.005)
    h3 = by_seq[828].frame.si(S14)
    assert by_seq[828].t == pytest.approx(4.287, abs=0.01)
    assert (h3["erpm"], h3["duty_cycle"]) == (1251, pytest.approx(3.5))
    assert by_seq[840].frame.si(S14)["erpm"] == 3594
    assert info[0].frame.volt_per_count == pytest.approx(8 / 910)


def test_v3_capture_frames_and_values() -> None:
    state, frames_iter = replay(V3)
    frames = list(frames_iter)
    assert state.protocol == "hobbywing-v3"
    assert all(isinstance(d.frame, HobbywingV3Frame) for d in frames)
    assert [d.frame.seq for d in frames] == list(range(699))
    assert state.stats.skipped_bytes == 0 and not state.stats.bad
    by_seq = {d.frame.seq: d.frame for d in frames}
    assert (by_seq[1].throttle_raw, by_seq[1].pwm_raw, by_seq[1].period_us) == (107, 10, 35_314)
    assert round(by_seq[1].erpm) == 1699
    assert (by_seq[28].pwm_raw, by_seq[28].period_us) == (21, 40_843)


@pytest.mark.parametrize(("lost", "reason"), [(1, "implausible"), (2, "timeout")])
def test_v4_capture_with_lost_bytes_resyncs(tmp_path: Path, lost: int, reason: str) -> None:
    lines = V4.read_text().splitlines()
    # Drop bytes of the frame with seq 817 (rows 14-33): with one byte lost the 0xB9 trailer
    # completes a bad frame; with two lost, the idle gap after it ends the partial frame.
    # Either way the next frame is not swallowed.
    damaged = tmp_path / "damaged.csv"
    damaged.write_text("\n".join(lines[:18] + lines[18 + lost :]) + "\n")
    state, frames_iter = replay(damaged, "hobbywing-v4")
    data = [d.frame.seq for d in frames_iter if isinstance(d.frame, HobbywingV4Frame)]
    assert data == list(range(818, 817 + 297))
    assert state.stats.bad[reason] >= 1


def test_capture_file_round_trip_and_rotation(tmp_path: Path) -> None:
    _, rows = read_capture(V4)
    writer = CaptureWriter(
        tmp_path / "cap", "hobbywing-v4", 19200, "/dev/pts/9", rotate_bytes=4096, keep=3
    )
    for t, data in rows:
        writer.write(1_700_000_000 + t, data)
    writer.close()
    files = sorted((tmp_path / "cap").glob("capture-*.csv"))
    assert len(files) == 3  # rotated, the oldest deleted
    meta, _ = read_capture(files[-1])
    assert (meta.protocol, meta.baud, meta.params["port"]) == ("hobbywing-v4", 19200, "/dev/pts/9")
    whole = tmp_path / "whole"
    writer = CaptureWriter(whole, "hobbywing-v4", 19200, rotate_bytes=10**9)
    for t, data in read_capture(V4)[1]:
        writer.write(1_700_000_000 + t, data)
    writer.close()
    (path,) = whole.glob("*.csv")
    state, frames = replay(path)
    assert state.detected is None and len(list(frames)) == 323


def test_parse_speed() -> None:
    assert parse_speed("10x") == 10 and parse_speed("0.5") == 0.5 and parse_speed(None) is None
    with pytest.raises(ValueError):
        parse_speed("0x")


def test_replay_paces_with_speed() -> None:
    slept: list[float] = []
    _, frames = replay(V4, speed=10, sleep=slept.append)
    assert len(list(frames)) == 323
    assert sum(slept) == pytest.approx((24.3438 + 0.0189 - 0.0656) / 10, abs=0.01)


def test_cli_replay_json_matches_golden() -> None:
    result = CliRunner().invoke(serial_group, ["replay", str(V4), "--json", "--poles", "14"])
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(objects) == 323
    golden = json.loads((TESTDATA / "hobbywing-platinum-v4.first.json").read_text())
    assert objects[: len(golden)] == golden
    assert all(o["protocol"] == "hobbywing-v4" for o in objects)
    summary = json.loads(result.stderr.splitlines()[-1])
    assert summary["frames"] == 323 and summary["bad"] == {} and summary["skipped_bytes"] == 0


def test_cli_replay_subprocess_v3() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hub.cli.serial", "replay", str(V3), "--protocol", "hobbywing-v3"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 699
    assert "699 frames (hobbywing-v3, given)" in proc.stderr
    assert "bad frames: none" in proc.stderr


def test_cli_replay_rejects_unknown_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.csv"
    junk.write_text("hello\n")
    result = CliRunner().invoke(serial_group, ["replay", str(junk)])
    assert result.exit_code != 0 and "neither a hub capture" in result.output
