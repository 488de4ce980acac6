from hub.sources.serial.crc import crc8_smbus, crc16_modbus, crc16_xmodem, sum16
from tests.serial import vectors as v


def test_catalogue_check_values() -> None:
    assert crc8_smbus(b"123456789") == 0xF4
    assert crc16_xmodem(b"123456789") == 0x31C3
    assert crc16_modbus(b"123456789") == 0x4B37


def test_protocol_vectors_verify() -> None:
    assert crc8_smbus(v.K1[:9]) == v.K1[9]
    assert crc8_smbus(v.K5[:9]) != v.K5[9]
    assert sum16(v.HF_1[:22]) == 0x080D
    assert crc16_modbus(v.HF_1[:22]) != 0x080D  # the HW doc's MODBUS claim does not hold
    assert crc16_modbus(v.H5_4[:8]) == 0x6060
    assert crc16_modbus(v.H5_1[:30]) != int.from_bytes(v.H5_1[30:], "little")
    assert crc16_modbus(v.H5_1_FIXED[:30]) == int.from_bytes(v.H5_1_FIXED[30:], "little")
    assert crc16_xmodem(b"\x04") == 0x4084
    assert crc16_xmodem(b"\x00") == 0x0000
