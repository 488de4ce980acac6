"""The dashboard behind a path prefix, as Home Assistant's ingress serves an add-on's web UI.

The Supervisor proxies `/api/hassio_ingress/<token>/...` to the add-on's port with the prefix
taken off, so every URL the page asks for must be relative to the page, never `/api/...` (that
would reach Home Assistant's own API). A small prefix-stripping proxy stands in for the
Supervisor; it answers 404 outside the prefix, and the test looks at every request the page made.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.web.conftest import WebHub

pytestmark = [pytest.mark.browser, pytest.mark.mosquitto, pytest.mark.slow]

PREFIX = "/api/hassio_ingress/Zx81ingress/"


@pytest.fixture
def ingress(web_hub: WebHub) -> Iterator[str]:
    upstream = httpx.Client(base_url=web_hub.base, timeout=10)

    class Proxy(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if not self.path.startswith(PREFIX):
                self.send_error(404, "outside the ingress prefix")
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() in {
                "authorization", "content-type", "accept"}}  # fmt: skip
            reply = upstream.request(
                self.command, "/" + self.path[len(PREFIX) :], content=body, headers=headers
            )
            self.send_response(reply.status_code)
            for name in ("content-type", "content-disposition", "cache-control"):
                if name in reply.headers:
                    self.send_header(name, reply.headers[name])
            self.send_header("Content-Length", str(len(reply.content)))
            self.end_headers()
            self.wfile.write(reply.content)

        do_GET = do_POST = _forward

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    server.shutdown()
    upstream.close()


def test_every_url_of_the_dashboard_stays_under_the_ingress_prefix(
    browser: Any, web_hub: WebHub, ingress: str
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    requests: list[str] = []
    sockets: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("websocket", lambda ws: sockets.append(ws.url))
    try:
        for route in ("overview", "air/airq-1/1h", "rc", "alerts"):
            page.goto(f"{ingress}#/{route}")
            page.wait_for_selector("#view[data-ready]", timeout=10_000)
        page.goto(f"{ingress}#/overview")
        page.wait_for_selector('#devices article[data-device="airq-1"]', timeout=10_000)
        origin = ingress[: -len(PREFIX)]
        outside = [u for u in requests if u.startswith(origin) and not u.startswith(ingress)]
        assert not outside, outside
        assert any(u.startswith(f"{ingress}api/") for u in requests), requests
        assert sockets and all(
            s.startswith(f"ws://127.0.0.1:{ingress.split(':')[2].split('/')[0]}{PREFIX}api/live")
            for s in sockets
        ), sockets
    finally:
        context.close()
