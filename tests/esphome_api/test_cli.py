"""`esphome-sim` as a real process, and its option checks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

from aioesphomeapi import APIClient
from click.testing import CliRunner

from hub.cli.simulate_esphome import esphome_sim

REPO = Path(__file__).resolve().parents[2]


def _two_free_ports() -> int:
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no two consecutive free ports")


async def test_simulator_process_serves_encrypted_nodes_on_consecutive_ports() -> None:
    port = _two_free_ports()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli.simulate_esphome",
        "--devices", "2", "--port-base", str(port), "--noise-key", "random", "--rate", "5",
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [
            (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip() for _ in range(3)
        ]
        assert lines[0].startswith("encryption key: ")
        key = lines[0].removeprefix("encryption key: ")
        assert lines[1:] == [f"airq-sim-1 127.0.0.1:{port}", f"airq-sim-2 127.0.0.1:{port + 1}"]
        for i, node_port in enumerate((port, port + 1), start=1):
            client = APIClient("127.0.0.1", node_port, None, noise_psk=key)
            await client.connect(login=True)
            assert (await client.device_info()).name == f"airq-sim-{i}"
            await client.disconnect()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_bad_options_are_refused() -> None:
    runner = CliRunner()
    result = runner.invoke(esphome_sim, ["--noise-key", "not-base64!"])
    assert result.exit_code == 2 and "not base64" in result.output
    result = runner.invoke(esphome_sim, ["--noise-key", "AAAA"])
    assert result.exit_code == 2 and "decodes to 3 bytes" in result.output
    result = runner.invoke(esphome_sim, ["--devices", "10", "--port-base", "65530"])
    assert result.exit_code == 2 and "past 65535" in result.output


def test_runs_for_a_while_on_free_ports() -> None:
    result = CliRunner().invoke(
        esphome_sim, ["--devices", "2", "--port-base", "0", "--run-for", "0.2"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("airq-sim-") == 2
