"""Checksums of the ESC protocols (catalogue names, check values in the spec §8).

Table-driven where the algorithm is ours; CRC-16/XMODEM is `binascii.crc_hqx` (the same
polynomial 0x1021, unreflected), which runs in C.
"""

from __future__ import annotations

import binascii


def _crc8_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


def _crc16_reflected_table(poly_reflected: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly_reflected if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC8 = _crc8_table(0x07)
_MODBUS = _crc16_reflected_table(0xA001)  # 0x8005 reflected


def crc8_smbus(data: bytes | bytearray | memoryview) -> int:
    """CRC-8/SMBUS (poly 0x07, init 0): KISS / BLHeli_32 / AM32 telemetry."""
    crc = 0
    table = _CRC8
    for b in data:
        crc = table[crc ^ b]
    return crc


def crc16_xmodem(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0): VESC packets."""
    return binascii.crc_hqx(data, 0)


def crc16_modbus(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS (poly 0x8005 reflected, init 0xFFFF): Hobbywing 0xFE frames."""
    crc = 0xFFFF
    table = _MODBUS
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def sum16(data: bytes | bytearray | memoryview) -> int:
    """Plain 16-bit byte sum: Hobbywing HW-FOC / XRotor frames (capture-proven)."""
    return sum(data) & 0xFFFF
