"""Update a provisioned node over the air with `esphome upload`.

After the first USB flash (`hub flash`), a node takes new firmware over Wi-Fi. ESPHome does
the transfer: `esphome upload CONFIG --device HOST [--file IMAGE]`, run in the config's
directory so its `!secret` lines resolve from the `secrets.yaml` next to it, exactly as
`hub firmware build` runs `esphome compile`. No secret is put on the command line (where `ps`
would show it); ESPHome reads the node's API key (which also encrypts and authenticates OTA,
`ota: encryption: {}` in firmware/packages/base.yaml) or OTA password from that file itself.

ESPHome's output is streamed to the caller with every value of the secrets file masked, and a
failure is classified from that output into a typed error with a hint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from hub.provision.adoption import UploadRecord
from hub.provision.firmware_build import BuildError, EsphomeMissingError, find_esphome
from hub.provision.secrets import secret_keys

__all__ = [
    "NoSuchNodeError",
    "NodeAuthError",
    "NodeUnreachableError",
    "UploadError",
    "UploadResult",
    "classify_failure",
    "default_host",
    "redact",
    "upload_firmware",
]

logger = logging.getLogger(__name__)

MASK = "********"
_MIN_SECRET_LEN = 6  # shorter values ("1883", "true") would mask ordinary words
_TAIL_LINES = 25

# espota2.py's messages when the key or password does not match (or encryption is refused).
_AUTH_PATTERNS = [
    r"Authentication invalid",
    r"requests password, but no password",
    r"Passwords? do not match",
    r"Auth(entication)? failed",
    r"InvalidEncryptionKey",
    r"RequiresEncryption",
    r"Invalid encryption key",
    r"encryption key (is )?(invalid|incorrect|wrong)",
    r"handshake (failed|error)",
    r"(failed|unable) to decrypt",
    r"Decryption failed",
]
# ... and when the node cannot be found or does not answer.
_UNREACHABLE_PATTERNS = [
    r"Error resolving IP address",
    r"Connecting to \S+ port \d+ failed",
    r"Connection failed\.",
    r"timed out",
    r"Connection refused",
    r"No route to host",
    r"Network is unreachable",
    r"Host is unreachable",
    r"Name or service not known",
]
_AUTH_RE = re.compile("|".join(_AUTH_PATTERNS), re.IGNORECASE)
_UNREACHABLE_RE = re.compile("|".join(_UNREACHABLE_PATTERNS), re.IGNORECASE)
_PROGRESS_RE = re.compile(r"^\s*Uploading:\s*\[[^\]]*\]\s*(\d+)%")


class UploadError(BuildError):
    hint = "Read ESPHome's output above; `hub flash NAME --port PORT` always works over USB."


class NoSuchNodeError(UploadError):
    hint = (
        "Node configs live in firmware/NAME.yaml (or pass --firmware-config); make the node's "
        "secrets with `hub device add NAME` and keep secrets.yaml next to the config."
    )


class NodeUnreachableError(UploadError):
    hint = (
        "Is it on the network? Try --device IP (mDNS `.local` names do not cross every "
        "router); a node that lost Wi-Fi can be reflashed with `hub flash NAME --port PORT`."
    )


class NodeAuthError(UploadError):
    hint = (
        "The node's key differs from the stored one: was it rotated (`hub device rotate`)? "
        "Flash it over serial once (`hub flash NAME --port PORT`); later updates work over the air."
    )


@dataclass(frozen=True)
class UploadResult:
    name: str
    config: Path
    device: str
    image: Path | None
    seconds: float

    def record(self, uploaded_at: float) -> UploadRecord:
        return UploadRecord(
            device=self.device,
            config=str(self.config),
            image=str(self.image) if self.image else None,
            uploaded_at=uploaded_at,
        )


def default_host(name: str) -> str:
    """ESPHome nodes announce themselves over mDNS as `<name>.local`."""
    return f"{name}.local"


def classify_failure(output: str) -> type[UploadError]:
    """Which error a failed upload's output shows. (Pure: tested with captured lines.)

    Authentication is checked first: a refused key is reported after a good connection.
    """
    if _AUTH_RE.search(output):
        return NodeAuthError
    if _UNREACHABLE_RE.search(output):
        return NodeUnreachableError
    return UploadError


def redact(line: str, secrets: Iterable[str]) -> str:
    """`line` with every secret value replaced by a mask (longest first, so none leaks half)."""
    for value in sorted(set(secrets), key=len, reverse=True):
        if len(value) >= _MIN_SECRET_LEN and value in line:
            line = line.replace(value, MASK)
    return line


def _load_secrets(secrets_file: Path) -> dict[str, object] | None:
    """The whole file (the hub-managed block and the user's own keys are one YAML mapping),
    or None when it cannot be read: ESPHome will then say what is wrong with it."""
    try:
        loaded = yaml.safe_load(secrets_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    if loaded is None:
        return {}
    return {str(k): v for k, v in loaded.items()} if isinstance(loaded, dict) else None


def secret_values(secrets_file: Path) -> list[str]:
    """Every value in the secrets file (the user's own part too: Wi-Fi password, broker...)."""
    values = (_load_secrets(secrets_file) or {}).values()
    return [str(v) for v in values if v is not None and not isinstance(v, bool)]


def _check_secrets(name: str, config: Path, secrets_file: Path) -> None:
    """The node's `!secret` names that the config uses must be in the secrets file."""
    text = config.read_text(encoding="utf-8", errors="replace")
    wanted = [key for key in secret_keys(name).values() if re.search(rf"!secret\s+{key}\b", text)]
    if not wanted:
        return  # the config names its secrets differently; ESPHome checks them itself
    if not secrets_file.is_file():
        raise NoSuchNodeError(
            f"{config} reads {', '.join(wanted)} from {secrets_file}, which does not exist",
            hint=(
                f"Run `hub device add {name} --secrets-file {secrets_file}`: ESPHome reads "
                "the secrets.yaml next to the config, as for `hub firmware build`."
            ),
        )
    loaded = _load_secrets(secrets_file)
    if loaded is None:
        return
    missing = [key for key in wanted if key not in loaded]
    if missing:
        raise NoSuchNodeError(
            f"{secrets_file} has no {', '.join(missing)} for {name}",
            hint=f"Run `hub device add {name}` (or `hub device rotate {name}` if it exists).",
        )


def upload_firmware(
    name: str,
    config: Path,
    *,
    device: str | None = None,
    image: Path | None = None,
    esphome: Sequence[str] | None = None,
    timeout: float = 600.0,
    on_line: Callable[[str], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> UploadResult:
    """Run `esphome upload CONFIG --device HOST [--file IMAGE]` and report how it went.

    `on_line` gets each output line (secrets masked); ESPHome's progress bar goes to
    `on_progress` as a percentage instead. Raises `NoSuchNodeError`, `EsphomeMissingError`,
    `NodeUnreachableError`, `NodeAuthError` or `UploadError`.
    """
    config = Path(config).resolve()
    if not config.is_file():
        raise NoSuchNodeError(f"No firmware config for {name} at {config}")
    if image is not None:
        image = Path(image).resolve()
        if not image.is_file():
            raise UploadError(f"No image at {image}", hint="Pass the app image ESPHome built.")
        if image.name.endswith(".factory.bin"):
            raise UploadError(
                f"{image.name} is a factory image (bootloader + partitions + app) for USB",
                hint="Over the air only the app goes: pass firmware.ota.bin / firmware.bin, "
                "or leave out --image to send ESPHome's last build.",
            )
    secrets_file = config.parent / "secrets.yaml"
    _check_secrets(name, config, secrets_file)
    masked = secret_values(secrets_file)
    host = device or default_host(name)
    command = [*(esphome or find_esphome()), "upload", str(config), "--device", host]
    if image is not None:
        command += ["--file", str(image)]
    logger.info("Uploading firmware to %s at %s: %s", name, host, " ".join(command))
    started = clock()
    try:
        process = subprocess.Popen(
            command,
            cwd=config.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group, so a kill reaches any children
        )
    except OSError as exc:
        raise EsphomeMissingError(f"Could not run {command[0]}: {exc}") from exc
    timed_out = threading.Event()

    def kill() -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def expire() -> None:
        timed_out.set()
        kill()

    # A node that stops answering mid-transfer leaves no output to wake a read-loop check.
    watchdog = threading.Timer(timeout, expire)
    watchdog.daemon = True
    watchdog.start()
    tail: list[str] = []
    try:
        assert process.stdout is not None
        for raw in process.stdout:  # text mode: the progress bar's "\r" also ends a line
            line = redact(raw.rstrip("\n"), masked)
            if not line.strip():
                continue
            progress = _PROGRESS_RE.match(line)
            if progress:
                if on_progress is not None:
                    on_progress(int(progress.group(1)))
                continue
            tail = [*tail[-(_TAIL_LINES - 1) :], line]
            if on_line is not None:
                on_line(line)
        code = process.wait()
    finally:
        watchdog.cancel()
        kill()  # Ctrl-C or an error here: do not leave ESPHome uploading in the background
    output_tail = "\n".join(tail)
    if timed_out.is_set():
        raise NodeUnreachableError(
            f"Uploading to {name} at {host} took longer than {timeout:g} s", output_tail
        )
    if code != 0:
        kind = classify_failure(output_tail)
        what = {
            NodeAuthError: "the node refused the key",
            NodeUnreachableError: "the node did not answer",
        }.get(kind, f"esphome exited with {code}")
        raise kind(f"Uploading to {name} at {host} failed: {what}", output_tail)
    seconds = clock() - started
    logger.info("Uploaded firmware to %s at %s in %.0f s", name, host, seconds)
    return UploadResult(name=name, config=config, device=host, image=image, seconds=seconds)
