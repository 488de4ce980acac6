"""A stand-in for an InfluxDB server that refuses on demand (no real server can be told to).

It speaks just enough of /api/v2/write: records every request body and answers with what the
test's `decide(lines)` returns (status, JSON message, extra headers); 204 by default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import orjson

Decision = tuple[int, str, dict[str, str]]


def accept(lines: list[str]) -> Decision:
    return 204, "", {}


class StandIn:
    def __init__(self) -> None:
        self.decide: Callable[[list[str]], Decision] = accept
        self.requests: list[tuple[dict[str, list[str]], str | None, list[str], int]] = []
        self.accepted: list[str] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode()
                lines = [line for line in body.split("\n") if line]
                url = urlsplit(self.path)
                status, message, headers = outer.decide(lines)
                with outer.lock:
                    outer.requests.append(
                        (parse_qs(url.query), self.headers.get("Authorization"), lines, status)
                    )
                    if 200 <= status < 300:
                        outer.accepted.extend(lines)
                payload = orjson.dumps({"code": "invalid", "message": message}) if message else b""
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                if payload:
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
