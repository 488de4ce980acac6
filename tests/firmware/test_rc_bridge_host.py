"""The rc-bridge's esc_bridge component, compiled for `host`, reading a real pseudo-terminal.

Bytes written to the pty's master side reach the firmware's UART code; the bridge lines it
makes come back as a text sensor over the native API. Checked: every byte arrives once and
in order, frames split at idle gaps, `seq` counts up, and `hello` / `stats` lines appear.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aioesphomeapi import APIClient, EntityState, TextSensorInfo

from tests.esphome_host import HostNode

pytestmark = pytest.mark.esphome

DEADLINE_S = 20.0
# KISS telemetry frame from esc-telemetry.md §8.1 (T 35 °C, 16.80 V, 12.34 A, 567 mAh).
KISS_FRAME = bytes.fromhex("23069004D20237010076")


@pytest.fixture
def bridge(rc_bridge_host_program: Path, tmp_path: Path) -> Iterator[tuple[HostNode, int]]:
    """A running rc-bridge-host reading the slave side of a pty; yields (node, master fd)."""
    master, slave = os.openpty()
    tty.setraw(slave)
    node = HostNode(
        rc_bridge_host_program,
        tmp_path / "rc-bridge-host",
        env={"HUB_TEST_ESC_PORT": os.ttyname(slave)},
    )
    try:
        with node:
            yield node, master
    finally:
        os.close(master)
        os.close(slave)


async def test_bridge_forwards_every_byte_as_lines(bridge: tuple[HostNode, int]) -> None:
    node, master = bridge
    api = APIClient(node.host, node.port, None, client_info="hub-tests")
    await asyncio.wait_for(api.connect(login=True), DEADLINE_S)
    try:
        entities, _ = await api.list_entities_services()
        (lines_sensor,) = [e for e in entities if isinstance(e, TextSensorInfo)]
        lines: list[dict[str, Any]] = []
        changed = asyncio.Event()

        def on_state(state: EntityState) -> None:
            if state.key == lines_sensor.key and not getattr(state, "missing_state", False):
                text = str(getattr(state, "state", ""))
                assert text.endswith("\n")
                lines.extend(json.loads(line) for line in text.splitlines())
                changed.set()

        api.subscribe_states(on_state)
        sent = b""
        # Ten frames with gaps (one chunk each), then a burst of three with no gap.
        for _ in range(10):
            os.write(master, KISS_FRAME)
            sent += KISS_FRAME
            await asyncio.sleep(0.03)
        os.write(master, KISS_FRAME * 3)
        sent += KISS_FRAME * 3

        def raw_bytes() -> bytes:
            return b"".join(bytes.fromhex(x["raw"]) for x in lines if "raw" in x)

        async with asyncio.timeout(DEADLINE_S):
            while len(raw_bytes()) < len(sent) or not any(x.get("evt") == "stats" for x in lines):
                changed.clear()
                await changed.wait()
    finally:
        await api.disconnect()

    raws = [x for x in lines if "raw" in x]
    assert raw_bytes() == sent
    assert all(x["v"] == 1 and x["src"] == "esc0" and x["proto"] == "kiss" for x in raws)
    assert [x["seq"] for x in raws] == list(range(raws[0]["seq"], raws[0]["seq"] + len(raws)))
    # Chunks end at idle gaps, so none cuts a frame in two (a busy machine may merge frames
    # into one chunk, never split them); the bridge's clock only moves forward.
    assert all(len(x["raw"]) % (2 * len(KISS_FRAME)) == 0 for x in raws)
    assert len(raws) > 1
    assert all(a["t_us"] < b["t_us"] for a, b in itertools.pairwise(raws))
    stats = [x for x in lines if x.get("evt") == "stats"]
    assert stats[-1]["src"] == "bridge" and stats[-1]["bytes"] >= len(sent)


async def test_hello_on_every_client_connect(bridge: tuple[HostNode, int]) -> None:
    node, _ = bridge
    for _ in range(2):
        api = APIClient(node.host, node.port, None, client_info="hub-tests")
        await asyncio.wait_for(api.connect(login=True), DEADLINE_S)
        hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def on_state(state: EntityState, hello: asyncio.Future[dict[str, Any]] = hello) -> None:
            for line in str(getattr(state, "state", "")).splitlines():
                parsed = json.loads(line)
                if parsed.get("evt") == "hello" and not hello.done():
                    hello.set_result(parsed)

        try:
            api.subscribe_states(on_state)
            found = await asyncio.wait_for(hello, DEADLINE_S)
        finally:
            await api.disconnect()
        assert found["src"] == "bridge"
        assert (found["proto"], found["baud"], found["esc"]) == ("kiss", 115200, "esc0")
        assert found["fw"].startswith("esphome-esc_bridge/")
