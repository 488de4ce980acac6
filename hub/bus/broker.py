"""The managed broker: a private Mosquitto the hub starts, supervises and stops.

Used when no broker URL is configured (the zero-set-up path). Persistence is on, with its
data beside the store, so queued QoS 1 messages and retained discovery survive restarts of
the broker and of the hub. If Mosquitto dies, it is restarted after a pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from hub.config import ManagedBrokerConfig

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "Mosquitto is not installed. Install it with 'sudo apt-get install mosquitto' (Debian/Ubuntu) "
    "or 'brew install mosquitto' (macOS), or point the hub at your broker with broker.url "
    "(HUB_BROKER__URL=mqtt://host:1883)."
)


class BrokerError(RuntimeError):
    """The managed broker cannot run; the message says what to do."""


def find_mosquitto(binary: str) -> str | None:
    if os.sep in binary:
        return binary if os.access(binary, os.X_OK) else None
    return shutil.which(binary) or next(
        (
            p
            for p in (
                f"/usr/sbin/{binary}",
                f"/usr/local/sbin/{binary}",
                f"/opt/homebrew/sbin/{binary}",
            )
            if os.access(p, os.X_OK)
        ),
        None,
    )


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the broker when the hub dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def port_in_use(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.3):
        return True
    return False


def render_config(config: ManagedBrokerConfig, data_dir: Path) -> str:
    lines = [
        "# Written by the hub (broker: managed). Edits are overwritten at the next start;",
        "# set broker.url to use your own Mosquitto instead.",
    ]
    if config.password_file is not None:
        lines += [
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {config.password_file}",
            *([f"acl_file {config.acl_file}"] if config.acl_file is not None else []),
            # Devices: the login is the client id, so no device can connect as another client
            # (the hub, another node) and be handed that client's session and queued messages.
            f"listener {config.port} {config.bind}",
            "use_username_as_clientid true",
            # The hub's own connections share its login and need their own client ids.
            f"listener {config.hub_port} 127.0.0.1",
        ]
    else:
        # Anonymous: no logins to tie client ids to, so loopback only (the config says so).
        lines += [
            f"listener {config.port} {config.bind}",
            f"allow_anonymous {'true' if config.allow_anonymous else 'false'}",
        ]
    lines += [
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 30",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        # The hub acks in batches after each commit: let many QoS 1 messages be in flight.
        "max_inflight_messages 10000",
        "max_queued_messages 1000000",
        "max_queued_bytes 0",
        # Forward each message at once: with Nagle on, a message right behind another one to
        # the same client (an alert's state after its attributes) can wait for a delayed ack.
        "set_tcp_nodelay true",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # as root, mosquitto would drop to a user that cannot write here
    return "\n".join(lines) + "\n"


class ManagedBroker:
    def __init__(self, config: ManagedBrokerConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir / "mosquitto"
        self.proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0
        self.log_path = self.data_dir / "mosquitto.log"

    @property
    def host(self) -> str:
        return "127.0.0.1" if self.config.bind in ("0.0.0.0", "::") else self.config.bind

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "mosquitto.pid"

    def _stop_leftover(self) -> None:
        """A managed broker left by a hub that was killed: ours (same config), so stop it."""
        try:
            pid = int(self.pid_path.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.data_dir / "mosquitto.conf").encode() in cmdline:
            log.warning("Stopping a managed Mosquitto left running by an earlier hub (pid %s)", pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)

    async def start(self) -> None:
        binary = find_mosquitto(self.config.binary)
        if binary is None:
            raise BrokerError(INSTALL_HINT)
        self._stop_leftover()
        if port_in_use(self.host, self.config.port):
            raise BrokerError(
                f"Port {self.config.port} on {self.host} is already in use, probably by another MQTT broker. "
                f"Use it with broker.url: mqtt://{self.host}:{self.config.port}, or move the managed broker "
                "with broker.managed.port."
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(render_config(self.config, self.data_dir))
        self._binary = binary
        self._conf = conf
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="hub-managed-broker")

    async def _spawn(self) -> None:
        log_file = self.log_path.open("ab")
        # Its own session: Ctrl-C in the terminal reaches the hub only, and the hub marks
        # itself offline before it stops the broker. The death signal stops it if the hub is killed.
        self.proc = await asyncio.create_subprocess_exec(
            self._binary, "-c", str(self._conf), stdout=log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
        log_file.close()
        self.pid_path.write_text(str(self.proc.pid))
        for _ in range(200):
            if self.proc.returncode is not None:
                tail = self.log_path.read_text(errors="replace")[-800:]
                raise BrokerError(
                    f"Mosquitto exited at start (code {self.proc.returncode}): {tail.strip()}"
                )
            if port_in_use(self.host, self.config.port):
                log.info(
                    "Managed Mosquitto listening on %s:%s (pid %s)",
                    self.config.bind,
                    self.config.port,
                    self.proc.pid,
                )
                return
            await asyncio.sleep(0.05)
        raise BrokerError(
            f"Mosquitto did not open port {self.config.port} within 10 s; see {self.log_path}"
        )

    async def _supervise(self) -> None:
        while not self._stopping:
            assert self.proc is not None
            code = await self.proc.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error(
                "Managed Mosquitto exited with code %s; restarting in %.0f s",
                code,
                self.config.restart_delay,
            )
            await asyncio.sleep(self.config.restart_delay)
            try:
                await self._spawn()
            except BrokerError as exc:
                log.error("Could not restart the managed Mosquitto: %s", exc)

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(OSError):
            self.pid_path.unlink()
