"""A private, real VictoriaMetrics for tests and the bench: free loopback port, own storage.

It takes InfluxDB v2 line protocol on /api/v2/write and is read back through /api/v1/export.
`stop()`/`start()` restart it on the same port with the same storage (outage tests).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from tests.support.mosquitto import free_port

REPO = Path(__file__).resolve().parents[2]
INSTALLER = REPO / "tools" / "victoria-metrics.sh"


def victoria_binary() -> str | None:
    for name in ("victoria-metrics", "victoria-metrics-prod"):
        found = shutil.which(name)
        if found:
            return found
    return next(
        (
            p
            for p in ("/usr/bin/victoria-metrics", "/usr/bin/victoria-metrics-prod")
            if Path(p).exists()
        ),
        None,
    )


class VictoriaMetrics:
    def __init__(self, workdir: Path, extra_args: Sequence[str] = ()) -> None:
        binary = victoria_binary()
        if binary is None:
            raise RuntimeError(f"victoria-metrics is not installed: run {INSTALLER}")
        self.binary = binary
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "victoria.log"
        self.extra_args = list(extra_args)  # e.g. the bench's -search.disableCache

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"-storageDataPath={self.workdir / 'data'}",
                f"-httpListenAddr={self.host}:{self.port}",
                "-retentionPeriod=100y",
                "-search.latencyOffset=0s",
                "-loggerLevel=ERROR",
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited: {self.log_path.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=1) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("victoria-metrics did not become healthy in 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def flush(self) -> None:
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10):
            pass

    def export(self, match: str = '{__name__=~".+"}') -> list[dict[str, Any]]:
        """Every stored series with its raw values and millisecond timestamps."""
        self.flush()
        query = urllib.parse.urlencode({"match[]": match, "start": "0"})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=60) as response:
            return [orjson.loads(line) for line in response.read().splitlines() if line.strip()]

    def sample_count(self) -> int:
        return sum(len(s["values"]) for s in self.export())

    def __enter__(self) -> VictoriaMetrics:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def export_when(server: VictoriaMetrics, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The export once it holds at least `count` samples (new series take a moment to index)."""
    deadline = time.monotonic() + timeout
    while True:
        series = server.export()
        if sum(len(s["values"]) for s in series) >= count or time.monotonic() > deadline:
            return series
        time.sleep(0.2)
