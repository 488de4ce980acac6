from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.influx.standin import StandIn
from tests.influx.victoria import INSTALLER, VictoriaMetrics, victoria_binary


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A real, private VictoriaMetrics on a free loopback port with its own storage."""
    if victoria_binary() is None:
        message = f"victoria-metrics is not installed (run {INSTALLER})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with VictoriaMetrics(tmp_path / "victoria") as server:
        yield server


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """The one fake: an HTTP server answering /api/v2/write as a test tells it to."""
    with StandIn() as server:
        yield server
