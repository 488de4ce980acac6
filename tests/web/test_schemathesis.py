"""Property-based requests from the OpenAPI schema (Schemathesis): no 5xx, whatever is sent.

Schemathesis generates the cases from the hub's own /api/openapi.json; they go over HTTP to a
real hub of its own (it purges and replays with the token, so it must not share the other
tests' data), with and without the token. Requests are sent with httpx (this was chosen when
`urllib3-future`, since dropped from the lock, broke the `requests` transport Schemathesis uses).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.web.conftest import WebHub, run_simulate, start_web_hub, stop_web_hub

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

EXAMPLES = 15


@pytest.fixture(scope="module")
def fuzz_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebHub]:
    # Generated cases carry made-up tokens: with the usual limit the address would get 429 for
    # everything after the tenth, and the cases with the right token would test nothing else.
    web = start_web_hub(tmp_path_factory.mktemp("fuzzhub"), {"web": {"auth_failures": 10_000}})
    try:
        run_simulate(web.broker, "--nodes", "1", "--buggies", "1", "--rounds", "5", "--seed", "1")
        yield web
    finally:
        stop_web_hub(web)


def send(http: httpx.Client, kwargs: dict[str, Any]) -> httpx.Response:
    body = kwargs.get("data")
    return http.request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=kwargs.get("headers"),
        json=kwargs.get("json"),
        content=body if isinstance(body, bytes | str) else None,
    )


@pytest.mark.parametrize("with_token", [True, False], ids=["token", "anonymous"])
def test_no_server_error_for_any_generated_request(fuzz_hub: WebHub, with_token: bool) -> None:
    raw = fuzz_hub.http.get("/api/openapi.json").json()
    schema = schemathesis.openapi.from_dict(raw)
    headers = fuzz_hub.auth() if with_token else {}
    failures: list[str] = []
    tested = 0
    with httpx.Client(timeout=15) as http:
        for result in schema.get_all_operations():
            operation = result.ok()

            @settings(
                max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck),
            )  # fmt: skip
            @given(case=operation.as_strategy())
            def check(case: Any) -> None:
                nonlocal tested
                kwargs = case.as_transport_kwargs(base_url=fuzz_hub.base, headers=headers)
                try:
                    response = send(http, kwargs)
                except httpx.LocalProtocolError:
                    return  # a header value no HTTP client may send: nothing reached the hub
                tested += 1
                if response.status_code >= 500:
                    failures.append(
                        f"{kwargs['method']} {response.request.url} -> {response.status_code}: "
                        f"{response.text[:300]}"
                    )
                else:
                    assert response.headers["content-type"].startswith(
                        ("application/json", "text/plain")
                    ), response.headers["content-type"]

            check()
    assert not failures, "\n".join(failures[:20])
    assert tested > 19 * 5  # every operation got real requests
    assert fuzz_hub.hub.proc is not None and fuzz_hub.hub.proc.poll() is None
    assert "Traceback" not in fuzz_hub.hub.log()
