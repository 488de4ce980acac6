"""Health, the Prometheus text metrics, and the running configuration (token only)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from hub.web import prometheus
from hub.web.context import Ctx, Private, Reader
from hub.web.models import ErrorResponse, Health

router = APIRouter(tags=["health"])


# Open to all, like any liveness probe (systemd, Docker, Uptime Kuma): it names no device.
@router.get(
    "/api/health",
    response_model=Health,
    summary="Is the hub well? 200 when every part is, 503 with the reasons when one is not",
    responses={503: {"model": Health, "description": "Degraded: `reasons` says what is wrong"}},
)
def health(ctx: Ctx, response: Response) -> dict[str, Any]:
    status = ctx.status()
    broker = (status.get("broker") or {}).get("state", "unknown")
    ingest = status.get("ingest") or {}
    overall = status.get("health") or {}
    state = overall.get("status") or ("ok" if broker == "connected" else "degraded")
    if state != "ok":
        response.status_code = 503
    return {
        "status": state,
        "reasons": list(overall.get("reasons") or ([] if state == "ok" else [f"broker: {broker}"])),
        "parts": {
            name: {"status": part.get("status", "ok"), "reason": part.get("reason", "")}
            for name, part in (overall.get("parts") or {}).items()
        },
        "version": ctx.version,
        "uptime_s": round(time.time() - ctx.started_at, 1),
        "broker": str(broker),
        "messages_per_s": float(ingest.get("messages_per_s", 0.0)),
        "readings_stored": int(ingest.get("readings_stored", 0)),
        "rejected_total": int(ingest.get("rejected_total", 0)),
        "live_clients": len(ctx.live.clients),
        "alerts_engine": ctx.alert_engine() is not None,
    }


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    dependencies=[Reader],
    summary="Prometheus metrics (text exposition format)",
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(ctx: Ctx) -> PlainTextResponse:
    text = prometheus.render(ctx.status(), ctx.readers.get().dead_letter_counts())
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get(
    "/api/config",
    dependencies=[Private],
    responses={401: {"model": ErrorResponse}},
    summary="The running configuration, secrets masked (needs the token)",
)
def config(ctx: Ctx) -> dict[str, Any]:
    return ctx.config_dump() if ctx.config_dump is not None else {}
