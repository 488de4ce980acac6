"""deploy/Dockerfile, really built and run with podman, on a base debootstrapped from Debian.

No registry is reachable here, so the base is a minimal bookworm root made from Debian's
packages (tools/container-base.sh, cached in /var/cache/hub-test) and the hub's wheels come
from a wheelhouse mounted into the build. The Dockerfile itself is the one users build from
the public python image: only build arguments differ.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto import Mosquitto, free_port

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "CONTAINERS_CONF": str(Path(__file__).with_name("containers.conf"))}


def podman(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args], env=ENV, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    if shutil.which("podman") is None or shutil.which("debootstrap") is None:
        pytest.fail("podman and debootstrap are missing (./dev test installs them)")
    base = subprocess.run(
        ["bash", str(REPO / "tools" / "container-base.sh")],
        capture_output=True, text=True, timeout=900, env=ENV,
    )  # fmt: skip
    assert base.returncode == 0, base.stderr[-3000:]
    base_image, wheels = base.stdout.split()
    tag = f"localhost/hub:test-{os.getpid()}"
    started = time.monotonic()
    podman(
        "build", "--format", "docker", "-f", "deploy/Dockerfile", "-t", tag,
        "--build-arg", f"BASE={base_image}",
        "--build-arg", "PIP_NO_INDEX=1", "--build-arg", "PIP_FIND_LINKS=/wheels",
        "-v", f"{wheels}:/wheels:ro", str(REPO),
        timeout=900,
    )  # fmt: skip
    print(f"\nimage built in {time.monotonic() - started:.0f} s")
    try:
        yield tag
    finally:
        podman("rmi", "-f", tag, check=False)


def test_dockerfile_builds_from_the_public_base_unchanged() -> None:
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=docker\.io/library/python:3\.11-slim-bookworm$", text, re.M)
    assert text.count("FROM ${BASE}") == 2  # both stages; nothing else names a base
    # Nothing tied to one architecture.
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not re.search(r"amd64|x86_64|aarch64|arm64|manylinux", code)


def test_image_is_non_root_with_a_data_volume_and_a_health_check(image: str) -> None:
    inspect = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspect["Config"]
    assert config["User"] == "hub"
    assert "/data" in config["Volumes"]
    assert "/api/health" in " ".join(inspect["Healthcheck"]["Test"])
    size = int(inspect["Size"])
    print(f"\nimage size {size / 1e6:.0f} MB")


def wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_container_runs_reports_store_and_broker_and_health(
    image: str, mosquitto: Mosquitto
) -> None:
    name = f"hub-test-{os.getpid()}"
    port = free_port()
    podman(
        "run", "-d", "--name", name, "--network=host",
        "-e", f"HUB_BROKER__URL={mosquitto.url}", "-e", f"HUB_WEB__PORT={port}", image,
    )  # fmt: skip
    try:

        def healthy() -> bool:
            return podman("healthcheck", "run", name, check=False).returncode == 0

        wait(healthy, 60, "the image's health check to pass")
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        report = json.loads(podman("exec", name, "hub", "status", "--json").stdout)
        assert report["running"] is True
        assert report["status"]["broker"]["state"] == "connected"
        assert report["status"]["store"]["path"] == "/data/hub.db"
        assert report["status"]["health"]["status"] == "ok"
        text = podman("exec", name, "hub", "status").stdout
        assert "Store" in text and "/data/hub.db" in text and "connected" in text
        # The broker goes away: /api/health answers 503 and the container turns unhealthy.
        mosquitto.stop()
        wait(lambda: not healthy(), 60, "the health check to fail without a broker")
        stopped = podman("stop", "-t", "30", name)
        assert stopped.returncode == 0
        code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert code == "0", podman("logs", name).stderr[-2000:]
    finally:
        podman("rm", "-f", name, check=False)
