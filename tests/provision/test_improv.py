"""Improv serial: packet vectors (checksums by hand), the stream decoder, and a pty round trip."""

from __future__ import annotations

import pytest

from hub.provision.improv import (
    ImprovDecoder,
    ImprovError,
    PacketType,
    RpcCommand,
    State,
    encode_packet,
    encode_rpc,
    encode_wifi_settings,
    provision_wifi,
)
from tests.provision.romsim import RomSimulator

# sum(b"IMPROV") = 73 + 77 + 80 + 82 + 79 + 86 = 477
GET_STATE = b"IMPROV\x01\x03\x02\x02\x00\xe5"  # 477+1+3+2+2+0 = 485 -> 0xE5
STATE_PROVISIONED = b"IMPROV\x01\x01\x01\x04\xe4"  # 477+1+1+1+4 = 484 -> 0xE4
# ssid "ab", password "c": 477+1+3+7 + 1+5 + 2+97+98 + 1+99 = 791 -> 0x17
WIFI_AB_C = b"IMPROV\x01\x03\x07\x01\x05\x02ab\x01c\x17"
RESULT_URL = b"IMPROV\x01\x04\x0b\x01\x09\x08http://x" + bytes([0x0B])  # checksum patched below


def _with_checksum(packet: bytes) -> bytes:
    return packet[:-1] + bytes([sum(packet[:-1]) & 0xFF])


def test_encode_vectors() -> None:
    assert encode_rpc(RpcCommand.GET_CURRENT_STATE) == GET_STATE
    assert encode_packet(PacketType.CURRENT_STATE, b"\x04") == STATE_PROVISIONED
    assert encode_wifi_settings("ab", "c") == WIFI_AB_C


def test_encode_limits() -> None:
    with pytest.raises(ValueError):
        encode_wifi_settings("", "pw")
    with pytest.raises(ValueError):
        encode_wifi_settings("x" * 33, "pw")
    with pytest.raises(ValueError):
        encode_wifi_settings("ssid", "p" * 65)


def test_decoder_finds_packets_in_log_text_byte_by_byte() -> None:
    result = _with_checksum(RESULT_URL)
    stream = (
        b"[I][app:100]: booting IMPRO\r\n"
        + STATE_PROVISIONED
        + b"\n[D][x:1]: hi\r\n"
        + result
        + b"\n"
    )
    whole = ImprovDecoder().feed(stream)
    decoder = ImprovDecoder()
    one_by_one = [p for i in range(len(stream)) for p in decoder.feed(stream[i : i + 1])]
    assert whole == one_by_one
    assert [p.type for p in whole] == [PacketType.CURRENT_STATE, PacketType.RPC_RESULT]
    assert whole[0].state == State.PROVISIONED
    assert whole[1].rpc_result() == (RpcCommand.WIFI_SETTINGS, ["http://x"])


def test_decoder_rejects_bad_checksum_and_version() -> None:
    bad = STATE_PROVISIONED[:-1] + b"\x00"
    wrong_version = b"IMPROV\x02\x01\x01\x04" + bytes([(484 + 1) & 0xFF])
    decoder = ImprovDecoder()
    packets = decoder.feed(bad + wrong_version + STATE_PROVISIONED)
    assert [p.state for p in packets] == [State.PROVISIONED]
    assert decoder.rejected == {"checksum": 1, "version": 1}


def test_packet_repr_hides_data() -> None:
    (packet,) = ImprovDecoder().feed(encode_packet(PacketType.RPC_COMMAND, b"\x01\x05\x02ab\x01c"))
    assert "ab" not in repr(packet)


def test_provision_over_pty() -> None:
    with RomSimulator(
        "esp32c3", download_mode=False, improv=True, app_log=["[I][app:1]: up"]
    ) as sim:
        result = provision_wifi(sim.port, "HomeLab", "hunter22", timeout=5)
        credentials = sim.improv.credentials if sim.improv else None
    assert result.state == State.PROVISIONED and result.urls == ["http://192.168.1.42"]
    assert credentials == ("HomeLab", "hunter22")


def test_provision_failure_is_reported() -> None:
    sim = RomSimulator("esp32", download_mode=False, improv=True, improv_connects=False)
    with sim, pytest.raises(ImprovError, match="could not connect") as caught:
        provision_wifi(sim.port, "HomeLab", "wrong-pass", timeout=5)
    assert "wrong-pass" not in str(caught.value)


def test_firmware_without_improv_times_out() -> None:
    sim = RomSimulator("esp32", download_mode=False)
    with sim, pytest.raises(ImprovError, match="improv_serial"):
        provision_wifi(sim.port, "HomeLab", "pw", hello_timeout=1.0)
