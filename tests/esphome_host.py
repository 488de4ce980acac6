"""The real ESPHome in tests: its venv, `esphome config`, and a `host` build run as a device.

ESPHome needs Python >= 3.12, so it lives in its own venv outside the checkout, made by
`tools/esphome-venv.sh`. A `host` platform build is a Linux binary running the real firmware's
native API; `HostNode` runs one on a loopback port and can kill and restart it.

Builds are cached outside the checkout (`$HUB_ESPHOME_BUILD`, default
/var/cache/hub-test/esphome-build), one folder per hash of the YAML and the ESPHome version, so
only the first run after a change compiles (about 11 s here, offline).

Fixtures to import into a conftest: `esphome_bin` (session), `hub_test_node_program` (session),
`hub_test_node` (a running node, per test), `rc_bridge_host_program` (session).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
HUB_TEST_NODE_YAML = FIRMWARE / "host" / "hub-test-node.yaml"
RC_BRIDGE_HOST_YAML = FIRMWARE / "host" / "rc-bridge-host.yaml"
COMPONENTS = FIRMWARE / "components"
VENV_SCRIPT = REPO / "tools" / "esphome-venv.sh"
ESPHOME_VERSION = "2026.10.0"
DEFAULT_BUILD_ROOT = Path("/var/cache/hub-test/esphome-build")
# Exit status of tools/esphome-venv.sh when no Python >= 3.12 exists on this machine.
NO_PYTHON_STATUS = 2


class EsphomeUnavailable(RuntimeError):
    """ESPHome cannot be installed here (no suitable Python, or the install failed)."""


def ensure_esphome() -> Path:
    """The path of the `esphome` executable, creating its venv first if needed.

    `$HUB_ESPHOME` names an existing executable and skips the venv script.
    """
    explicit = os.environ.get("HUB_ESPHOME")
    if explicit:
        path = Path(explicit)
        if not os.access(path, os.X_OK):
            raise EsphomeUnavailable(f"HUB_ESPHOME={explicit} is not an executable")
        return path
    env = dict(os.environ, HUB_ESPHOME_VERSION=ESPHOME_VERSION)
    proc = subprocess.run(
        ["bash", str(VENV_SCRIPT)], capture_output=True, text=True, env=env, timeout=900
    )
    if proc.returncode != 0:
        why = "no Python >= 3.12" if proc.returncode == NO_PYTHON_STATUS else "install failed"
        raise EsphomeUnavailable(
            f"{VENV_SCRIPT.name} exited {proc.returncode} ({why}): {proc.stderr.strip()[-2000:]}"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def esphome_or_skip() -> Path:
    """`ensure_esphome()`, skipping the test when ESPHome cannot be installed.

    In CI (`CI=true`) a missing ESPHome is a failure, not a skip: .ci/run installs it.
    """
    try:
        return ensure_esphome()
    except EsphomeUnavailable as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"ESPHome is required in CI: {exc}")
        pytest.skip(f"ESPHome cannot be installed here: {exc}")


def build_root() -> Path:
    return Path(os.environ.get("HUB_ESPHOME_BUILD", str(DEFAULT_BUILD_ROOT)))


def _component_files() -> list[Path]:
    return sorted(p for p in COMPONENTS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def build_key(yaml_path: Path) -> str:
    """Cache key of a host build: ESPHome's version, the YAML and firmware/components/."""
    digest = hashlib.sha256()
    digest.update(ESPHOME_VERSION.encode())
    for path in [yaml_path, *_component_files()]:
        digest.update(b"\0" + str(path.relative_to(FIRMWARE)).encode() + b"\0")
        digest.update(path.read_bytes())
    return f"{yaml_path.stem}-{digest.hexdigest()[:16]}"


def host_program_path(build_dir: Path, node_name: str) -> Path:
    return (
        build_dir / "host" / ".esphome" / "build" / node_name / ".pioenvs" / node_name / "program"
    )


def compile_host(
    esphome: Path, yaml_path: Path, node_name: str, *, timeout_s: float = 600.0
) -> Path:
    """Compile a `host` platform YAML (cached) and return the path of the Linux binary.

    The YAML (as `host/<name>.yaml`) and firmware/components/ are copied into the cache
    folder and compiled there, so ESPHome's `.esphome/` build tree never lands in the
    checkout and `../components` still resolves. A file lock keeps two test sessions from
    compiling into the same folder at once.
    """
    build_dir = build_root() / build_key(yaml_path)
    build_dir.mkdir(parents=True, exist_ok=True)
    program = host_program_path(build_dir, node_name)
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not program.is_file():
            local_yaml = build_dir / "host" / yaml_path.name
            local_yaml.parent.mkdir(exist_ok=True)
            shutil.copyfile(yaml_path, local_yaml)
            shutil.rmtree(build_dir / "components", ignore_errors=True)
            shutil.copytree(
                COMPONENTS, build_dir / "components", ignore=shutil.ignore_patterns("__pycache__")
            )
            started = time.monotonic()
            proc = subprocess.run(
                [str(esphome), "compile", local_yaml.name],
                cwd=local_yaml.parent,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
            if proc.returncode != 0 or not program.is_file():
                tail = (proc.stdout + proc.stderr)[-4000:]
                raise RuntimeError(
                    f"esphome compile {yaml_path} failed ({proc.returncode}):\n{tail}"
                )
            log.info("compiled %s in %.1f s", yaml_path.name, time.monotonic() - started)
    # Older builds of the same YAML are about 80 MB each and never used again.
    for old in build_dir.parent.glob(f"{yaml_path.stem}-*"):
        if old != build_dir and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return program


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HostNode:
    """A running ESPHome `host` binary serving the native API on 127.0.0.1:`port`.

    The port is passed at run time through `HUB_TEST_API_PORT` (see hub-test-node.yaml), so
    one cached binary serves any port. `kill()` is a crash (SIGKILL), `stop()` a clean stop.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        program: Path,
        workdir: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.program = program
        self.extra_env = dict(env or {})
        self.workdir = workdir
        self.port = port or free_port()
        self.log_path = workdir / "node.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 15.0) -> None:
        if self.running:
            raise RuntimeError("host node already running")
        prefs = self.workdir / "prefs"
        prefs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, HUB_TEST_API_PORT=str(self.port), ESPHOME_PREFDIR=str(prefs))
        env.update(self.extra_env)
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                [str(self.program)],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self._wait_listening(timeout_s)

    def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"host node exited early:\n{self.log_text()[-2000:]}")
            with contextlib.suppress(OSError):
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"host node not listening on {self.port} after {timeout_s} s")

    def _end(self, sig: int, timeout_s: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """Crash the device: SIGKILL, no goodbye to connected clients."""
        self._end(signal.SIGKILL, 5.0)

    def stop(self) -> None:
        """Stop the device cleanly (SIGTERM)."""
        self._end(signal.SIGTERM, 5.0)

    def restart(self, timeout_s: float = 15.0) -> None:
        """Kill and start again on the same port."""
        self.kill()
        self.start(timeout_s)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> HostNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


@pytest.fixture(scope="session")
def esphome_bin() -> Path:
    """The real `esphome` executable (installed on first use; skipped only if impossible)."""
    return esphome_or_skip()


@pytest.fixture(scope="session")
def hub_test_node_program(esphome_bin: Path) -> Path:
    """firmware/host/hub-test-node.yaml compiled for `host` (cached across sessions)."""
    return compile_host(esphome_bin, HUB_TEST_NODE_YAML, "hub-test-node")


@pytest.fixture(scope="session")
def rc_bridge_host_program(esphome_bin: Path) -> Path:
    """firmware/host/rc-bridge-host.yaml (the esc_bridge component) compiled for `host`."""
    return compile_host(esphome_bin, RC_BRIDGE_HOST_YAML, "rc-bridge-host")


@pytest.fixture
def hub_test_node(hub_test_node_program: Path, tmp_path: Path) -> Iterator[HostNode]:
    """A running hub-test-node on a free loopback port, killed after the test."""
    with HostNode(hub_test_node_program, tmp_path / "hub-test-node") as node:
        yield node
