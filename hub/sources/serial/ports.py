"""USB serial adapters on this machine, with VID:PID and a guess at the bridge chip."""

from __future__ import annotations

from dataclasses import dataclass

# (VID, PID or None for any) -> chip family. Well-known USB ids of the usual adapters.
CHIPS: dict[tuple[int, int | None], str] = {
    (0x10C4, 0xEA60): "CP210x",
    (0x10C4, 0xEA70): "CP210x (dual)",
    (0x10C4, None): "Silicon Labs",
    (0x1A86, 0x7523): "CH340",
    (0x1A86, 0x5523): "CH341",
    (0x1A86, 0x55D4): "CH9102",
    (0x1A86, None): "WCH (CH34x)",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT-X",
    (0x0403, None): "FTDI",
    (0x303A, 0x1001): "ESP32 USB-JTAG/serial",
    (0x303A, None): "Espressif native USB",
    (0x067B, 0x2303): "Prolific PL2303",
    (0x2341, None): "Arduino",
}


@dataclass(frozen=True, slots=True)
class PortInfo:
    device: str
    vid: int | None
    pid: int | None
    chip: str
    description: str
    serial_number: str | None

    @property
    def vid_pid(self) -> str:
        return (
            f"{self.vid:04X}:{self.pid:04X}"
            if self.vid is not None and self.pid is not None
            else "-"
        )


def chip_guess(vid: int | None, pid: int | None) -> str:
    if vid is None:
        return "-"
    return CHIPS.get((vid, pid)) or CHIPS.get((vid, None)) or "unknown"


def list_ports(include_all: bool = False) -> list[PortInfo]:
    """USB serial ports (every serial port with `include_all`), sorted by device name."""
    from serial.tools import list_ports as lp

    found = []
    for p in lp.comports():
        if p.vid is None and not include_all:
            continue
        found.append(
            PortInfo(
                p.device,
                p.vid,
                p.pid,
                chip_guess(p.vid, p.pid),
                p.description or "",
                p.serial_number,
            )
        )
    return sorted(found, key=lambda p: p.device)
