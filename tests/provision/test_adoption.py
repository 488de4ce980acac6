from __future__ import annotations

from pathlib import Path

import pytest

from hub.provision.adoption import AdoptionError, AdoptionStore, BuildRecord, FlashRecord

BUILD = BuildRecord("/fw/n1.factory.bin", "/fw/n1.yaml", "ab" * 16, 1000, "esp32s3", 1.0)
FLASH = FlashRecord("/dev/ttyUSB0", "esp32s3", "ESP32-S3", 0, 1000, "cd" * 16, 460800, 2.0)


def test_round_trip_and_atomic_write(tmp_path: Path) -> None:
    store = AdoptionStore(tmp_path / "data")
    assert store.load() == {}
    store.record_build("n1", BUILD)
    store.record_flash("n1", FLASH, wifi_ssid="HomeLab")
    store.record_build("n2", BUILD)
    again = AdoptionStore(tmp_path / "data").load()
    assert again["n1"].build == BUILD and again["n1"].flash == FLASH
    assert again["n1"].wifi_ssid == "HomeLab" and again["n2"].flash is None
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["adopted.json"]
    assert store.remove("n2") and not store.remove("n2")
    assert list(store.load()) == ["n1"]


def test_damaged_file_is_an_error_not_a_reset(tmp_path: Path) -> None:
    store = AdoptionStore(tmp_path)
    store.path.write_text("{not json")
    with pytest.raises(AdoptionError, match=r"adopted\.json is damaged"):
        store.record_build("n1", BUILD)
    assert store.path.read_text() == "{not json"
