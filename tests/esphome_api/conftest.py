from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator

import pytest

from hub.sources.esphome_sim import SimulatedDevice


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves a task running (aioesphomeapi's own habit, tests/conftest.py)."""
    before = asyncio.all_tasks()
    yield
    for _ in range(5):  # callbacks scheduled by the last close may need a few loop turns
        await asyncio.sleep(0)
    leaked = [
        t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()
    ]
    for task in leaked:
        task.cancel()
    await asyncio.gather(*leaked, return_exceptions=True)
    assert not leaked, f"leaked tasks: {[t.get_name() for t in leaked]}"


@pytest.fixture
def psk() -> bytes:
    return os.urandom(32)


@pytest.fixture
def psk_b64(psk: bytes) -> str:
    return base64.b64encode(psk).decode()


@pytest.fixture
async def plain_device() -> AsyncIterator[SimulatedDevice]:
    async with SimulatedDevice("airq-plain", port=0, rate=20.0, seed=1) as device:
        yield device


@pytest.fixture
async def noise_device(psk: bytes) -> AsyncIterator[SimulatedDevice]:
    async with SimulatedDevice("airq-noise", port=0, rate=20.0, noise_psk=psk, seed=2) as device:
        yield device
