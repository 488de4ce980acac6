"""Build a node's firmware with `esphome compile` and find the factory image it produced.

ESPHome is a large tool with its own dependencies, so the hub runs it as a program: `esphome` on
PATH, or the one named by `HUB_ESPHOME` (e.g. `~/.venvs/esphome/bin/esphome`). The first build of
a node downloads the ESP32 toolchain, framework and libraries through PlatformIO, which needs
internet; later builds run offline from the cache. A build that fails for want of a network says
exactly that.

Build products land in `<config dir>/.esphome/build/<node>/`; the factory image (bootloader,
partition table and app merged, flashed at 0x0) is the `*.factory.bin` written by this build.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hub.provision.adoption import BuildRecord
from hub.provision.flash import FlashError, read_image_header

__all__ = [
    "BuildError",
    "BuildResult",
    "EsphomeMissingError",
    "NeedsInternetError",
    "build_firmware",
    "find_esphome",
    "looks_offline",
]

logger = logging.getLogger(__name__)

# What pip/PlatformIO/git print when a download fails for want of a network.
_OFFLINE_PATTERNS = [
    r"Temporary failure in name resolution",
    r"Name or service not known",
    r"nodename nor servname provided",
    r"Could not resolve host",
    r"Failed to establish a new connection",
    r"Network is unreachable",
    r"Max retries exceeded with url",
    r"ConnectionError",
    r"HTTPClientError",
    r"getaddrinfo failed",
    r"Could not install package",
    r"Connection refused",
    r"Read timed out",
    r"unable to access 'https?://",
]
_OFFLINE_RE = re.compile("|".join(_OFFLINE_PATTERNS), re.IGNORECASE)
_TAIL_LINES = 25


class BuildError(FlashError):
    hint = "Read the compiler output above; `esphome config CONFIG` checks the YAML alone."

    def __init__(self, message: str, output_tail: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.output_tail = output_tail


class EsphomeMissingError(BuildError):
    hint = (
        "Install ESPHome in its own virtualenv (`python -m venv ~/.venvs/esphome && "
        "~/.venvs/esphome/bin/pip install esphome`) and point HUB_ESPHOME at its `esphome`."
    )


class NeedsInternetError(BuildError):
    hint = (
        "The first build of a node downloads the ESP32 toolchain, framework and libraries "
        "(several hundred MB) and needs internet. Connect this machine, run "
        "`hub firmware build NAME` once; later builds work offline from the cache."
    )


@dataclass(frozen=True)
class BuildResult:
    name: str
    config: Path
    factory_image: Path
    md5: str
    size: int
    chip: str | None
    seconds: float

    def record(self, built_at: float) -> BuildRecord:
        return BuildRecord(
            factory_image=str(self.factory_image),
            config=str(self.config),
            md5=self.md5,
            size=self.size,
            chip=self.chip,
            built_at=built_at,
        )


def looks_offline(output: str) -> bool:
    """Did this build output fail on a download? (Pure: tested with captured outputs.)"""
    return bool(_OFFLINE_RE.search(output))


def find_esphome(env: dict[str, str] | None = None) -> list[str]:
    """The command that runs ESPHome: $HUB_ESPHOME, else `esphome` on PATH."""
    env = dict(os.environ) if env is None else env
    configured = env.get("HUB_ESPHOME")
    if configured:
        if shutil.which(configured) is None and not os.access(configured, os.X_OK):
            raise EsphomeMissingError(f"HUB_ESPHOME={configured} is not an executable")
        return [configured]
    found = shutil.which("esphome", path=env.get("PATH"))
    if found is None:
        raise EsphomeMissingError("ESPHome is not installed (no `esphome` on PATH)")
    return [found]


def _factory_images(build_root: Path, since: float) -> list[Path]:
    if not build_root.is_dir():
        return []
    images = [p for p in build_root.rglob("*.factory.bin") if p.stat().st_mtime >= since]
    return sorted(images, key=lambda p: p.stat().st_mtime, reverse=True)


def build_firmware(
    name: str,
    config: Path,
    *,
    esphome: Sequence[str] | None = None,
    timeout: float = 3600.0,
    on_line: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> BuildResult:
    """Run `esphome compile CONFIG`; return the factory image this build wrote.

    `on_line` receives each output line as it comes (the CLI shows them). Raises `BuildError`
    (or `NeedsInternetError`, `EsphomeMissingError`).
    """
    config = Path(config).resolve()
    if not config.is_file():
        raise BuildError(
            f"No firmware config for {name} at {config}",
            hint="Write the node's ESPHome YAML there, or pass --firmware-config.",
        )
    command = [*(esphome or find_esphome()), "compile", str(config)]
    started = clock()
    logger.info("Building firmware for %s: %s", name, " ".join(command))
    tail: list[str] = []
    offline = False
    try:
        process = subprocess.Popen(
            command,
            cwd=config.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise EsphomeMissingError(f"Could not run {command[0]}: {exc}") from exc
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        line = line.rstrip("\n")
        offline = offline or looks_offline(line)
        tail = [*tail[-(_TAIL_LINES - 1) :], line]
        if on_line is not None:
            on_line(line)
        if time.monotonic() > deadline:
            process.kill()
            break
    code = process.wait()
    output_tail = "\n".join(tail)
    if time.monotonic() > deadline:
        raise BuildError(f"Building {name} took longer than {timeout:.0f} s", output_tail)
    if code != 0:
        if offline:
            raise NeedsInternetError(
                f"Building {name} failed: a download failed (no internet?)", output_tail
            )
        raise BuildError(f"Building {name} failed (esphome exited with {code})", output_tail)
    images = _factory_images(config.parent / ".esphome" / "build", started - 1)
    if not images:
        raise BuildError(
            f"esphome compiled {name} but no *.factory.bin appeared under "
            f"{config.parent / '.esphome' / 'build'}",
            output_tail,
        )
    image = images[0]
    data = image.read_bytes()
    try:
        chip = read_image_header(data).chip
    except FlashError:
        chip = None
    seconds = clock() - started
    logger.info("Built %s in %.0f s: %s (%d bytes)", name, seconds, image, len(data))
    return BuildResult(
        name=name,
        config=config,
        factory_image=image,
        md5=hashlib.md5(data).hexdigest(),
        size=len(data),
        chip=chip,
        seconds=seconds,
    )
