from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto, mosquitto_binary


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real, private Mosquitto on a free loopback port (persistence on)."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed (.ci/run installs it: apt-get install mosquitto)")
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker
