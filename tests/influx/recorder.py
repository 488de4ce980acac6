"""A recording InfluxDB stand-in for outage tests: counts every point it answered 2xx to.

It answers /api/v2/write (204, or what `decide(lines)` says), /health (200) and /ping (204),
and can go `down()` (the listening socket closes: connection refused, as after a SIGKILL) and
come back `up()` on the same port. `accepted` counts each line it acknowledged, so a test can
check "every point exactly once" (a point sent twice shows up with a count of 2).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

Decision = tuple[int, str]


class Recorder:
    def __init__(self) -> None:
        self.decide: Callable[[list[str]], Decision] = lambda lines: (204, "")
        self.accepted: Counter[str] = Counter()
        self.refused_requests = 0
        self.probes: list[float] = []  # monotonic times of /health and /ping requests
        self.writes: list[tuple[float, int, int]] = []  # (monotonic, lines, status)
        self.lock = threading.Lock()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        # HTTP/1.0 (the default): one request per connection, so down() cuts every client off.
        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, payload: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                with outer.lock:
                    outer.probes.append(time.monotonic())
                if self.path.startswith("/health"):
                    self._answer(200, b'{"status":"pass"}')
                elif self.path.startswith("/ping"):
                    self._answer(204)
                else:
                    self._answer(404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                lines = [x for x in self.rfile.read(length).decode().split("\n") if x]
                status, message = outer.decide(lines)
                with outer.lock:
                    outer.writes.append((time.monotonic(), len(lines), status))
                    if 200 <= status < 300:
                        outer.accepted.update(lines)
                    else:
                        outer.refused_requests += 1
                payload = orjson.dumps({"code": "invalid", "message": message}) if message else b""
                self._answer(status, payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def up(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def points(self) -> int:
        with self.lock:
            return sum(self.accepted.values())

    def duplicates(self) -> dict[str, int]:
        with self.lock:
            return {line: n for line, n in self.accepted.items() if n > 1}

    def __enter__(self) -> Recorder:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
