"""Alerts: active ones, history, acknowledge and silence, backed by the hub's alert engine.

Answers 503 with a clear message when `hub run` has no alert engine configured.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from hub.web.context import Ctx, Reader, Writer
from hub.web.models import (
    AcknowledgeRequest,
    AlertOut,
    ErrorResponse,
    SilenceRequest,
    SilenceResult,
)

router = APIRouter(
    prefix="/api/alerts",
    tags=["alerts"],
    responses={503: {"model": ErrorResponse, "description": "No alert engine is running."}},
)


def alert_dict(alert: Any) -> dict[str, Any]:
    """An alert of the engine as plain JSON-able data, whatever type the engine uses."""
    if isinstance(alert, dict):
        data = dict(alert)
    elif dataclasses.is_dataclass(alert) and not isinstance(alert, type):
        data = dataclasses.asdict(alert)
    elif hasattr(alert, "model_dump"):
        data = alert.model_dump(mode="json")
    elif hasattr(alert, "as_dict"):
        data = dict(alert.as_dict())
    else:
        data = dict(vars(alert))
    return {k: _jsonable(v) for k, v in data.items()}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and isinstance(value.value, str | int):  # enums
        return value.value
    return str(value)


def _engine(ctx: Ctx) -> Any:
    engine = ctx.alert_engine()
    if engine is None:
        raise HTTPException(
            503, "no alert engine is configured in this hub (see the 'alerts' section of hub.yaml)"
        )
    return engine


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


@router.get("", response_model=list[AlertOut], dependencies=[Reader], summary="Active alerts")
async def active(ctx: Ctx) -> list[dict[str, Any]]:
    engine = _engine(ctx)
    return [alert_dict(a) for a in await _maybe_await(engine.active())]


@router.get(
    "/history",
    response_model=list[AlertOut],
    dependencies=[Reader],
    summary="Alert history, newest first",
)
async def history(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    device: Annotated[str | None, Query(max_length=200)] = None,
) -> list[dict[str, Any]]:
    engine = _engine(ctx)
    return [alert_dict(a) for a in await _maybe_await(engine.history(limit, device=device))]


@router.post(
    "/{alert_id}/ack",
    response_model=AlertOut,
    dependencies=[Writer],
    responses={404: {"model": ErrorResponse}, 401: {"model": ErrorResponse}},
    summary="Acknowledge an alert (needs the token)",
)
async def acknowledge(
    ctx: Ctx,
    alert_id: Annotated[int, Path(ge=0, lt=2**63)],
    body: AcknowledgeRequest | None = None,
) -> dict[str, Any]:
    engine = _engine(ctx)
    by = body.by if body is not None else "dashboard"
    try:
        result = await _maybe_await(engine.acknowledge(alert_id, by))
    except KeyError:
        raise HTTPException(404, f"no alert with id {alert_id}") from None
    return alert_dict(result)


@router.post(
    "/silence",
    response_model=SilenceResult,
    dependencies=[Writer],
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
    summary="Hold back an alert's (or a rule's) notifications for a while (needs the token)",
)
async def silence(ctx: Ctx, body: SilenceRequest) -> dict[str, Any]:
    engine = _engine(ctx)
    if (body.alert_id is None) == (body.rule is None):
        raise HTTPException(400, "name exactly one of 'alert_id' or 'rule' to silence")
    target: int | str = body.alert_id if body.alert_id is not None else str(body.rule)
    until_ms = time.time_ns() // 1_000_000 + int(body.duration_s * 1000)
    try:
        touched = await _maybe_await(engine.silence(target, until_ms, body.by))
    except KeyError as exc:
        raise HTTPException(404, str(exc.args[0]) if exc.args else "unknown target") from None
    return {"until_ms": until_ms, "alerts": [alert_dict(a) for a in touched or ()]}
