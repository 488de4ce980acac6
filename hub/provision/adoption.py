"""What the hub knows about each node it has built firmware for and flashed: one JSON file.

`<data_dir>/adopted.json` maps a device name to its last firmware build (factory image path,
MD5, chip) and its last flash (port, chip, MD5 read back from the flash, when). It is written
atomically (temporary file, fsync, rename), so a crash mid-write leaves the old file whole. A file
that cannot be parsed is an error that names the file; it is never silently replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "AdoptedDevice",
    "AdoptionError",
    "AdoptionStore",
    "BuildRecord",
    "FlashRecord",
    "UploadRecord",
]

FILE_NAME = "adopted.json"
FORMAT_VERSION = 1


class AdoptionError(Exception):
    pass


@dataclass(frozen=True)
class BuildRecord:
    factory_image: str  # absolute path of the image flashed at 0x0
    config: str  # the ESPHome YAML it was built from
    md5: str
    size: int
    chip: str | None  # from the image header, e.g. "esp32s3"
    built_at: float  # Unix seconds


@dataclass(frozen=True)
class FlashRecord:
    port: str
    chip: str
    chip_description: str
    address: int
    size: int
    md5: str  # read back from the flash after writing
    baud: int
    flashed_at: float


@dataclass(frozen=True)
class UploadRecord:
    """The last over-the-air update (`hub firmware upload`)."""

    device: str  # the host name or IP it went to
    config: str  # the ESPHome YAML
    image: str | None  # the file given with --image, else None (ESPHome's own build product)
    uploaded_at: float  # Unix seconds


@dataclass(frozen=True)
class AdoptedDevice:
    name: str
    build: BuildRecord | None = None
    flash: FlashRecord | None = None
    wifi_ssid: str | None = None  # the SSID sent over Improv (never the password)
    extra: dict[str, Any] = field(default_factory=dict)
    upload: UploadRecord | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "build": asdict(self.build) if self.build else None,
            "flash": asdict(self.flash) if self.flash else None,
            "wifi_ssid": self.wifi_ssid,
        }
        if self.extra:
            out["extra"] = self.extra
        if self.upload:  # only when there is one: older files stay byte-identical
            out["upload"] = asdict(self.upload)
        return out

    @classmethod
    def from_json(cls, name: str, raw: dict[str, Any]) -> AdoptedDevice:
        build = raw.get("build")
        flash = raw.get("flash")
        upload = raw.get("upload")
        return cls(
            name=name,
            build=BuildRecord(**build) if build else None,
            flash=FlashRecord(**flash) if flash else None,
            wifi_ssid=raw.get("wifi_ssid"),
            extra=dict(raw.get("extra") or {}),
            upload=UploadRecord(**upload) if upload else None,
        )


class AdoptionStore:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / FILE_NAME

    def load(self) -> dict[str, AdoptedDevice]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            raw = json.loads(text)
            if raw.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown format version {raw.get('version')!r}")
            return {
                name: AdoptedDevice.from_json(name, entry)
                for name, entry in dict(raw["devices"]).items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise AdoptionError(f"{self.path} is damaged ({exc}): fix or remove it") from None

    def get(self, name: str) -> AdoptedDevice | None:
        return self.load().get(name)

    def record_build(self, name: str, build: BuildRecord) -> AdoptedDevice:
        return self._update(name, lambda d: replace(d, build=build))

    def record_flash(
        self, name: str, flash: FlashRecord, wifi_ssid: str | None = None
    ) -> AdoptedDevice:
        def change(device: AdoptedDevice) -> AdoptedDevice:
            device = replace(device, flash=flash)
            return replace(device, wifi_ssid=wifi_ssid) if wifi_ssid else device

        return self._update(name, change)

    def record_upload(self, name: str, upload: UploadRecord) -> AdoptedDevice:
        return self._update(name, lambda d: replace(d, upload=upload))

    def remove(self, name: str) -> bool:
        devices = self.load()
        if devices.pop(name, None) is None:
            return False
        self._write(devices)
        return True

    def _update(self, name: str, change: Any) -> AdoptedDevice:
        devices = self.load()
        device = change(devices.get(name) or AdoptedDevice(name))
        devices[name] = device
        self._write(devices)
        return device

    def _write(self, devices: dict[str, AdoptedDevice]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "version": FORMAT_VERSION,
            "devices": {name: devices[name].to_json() for name in sorted(devices)},
        }
        fd, tmp = tempfile.mkstemp(prefix=".adopted.", suffix=".tmp", dir=self.data_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, indent=2, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dir_fd = os.open(self.data_dir, os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
