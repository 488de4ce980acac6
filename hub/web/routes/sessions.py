"""RC drive sessions (their readings come from /api/query over the session's time range).

A session lists the alerts of its device that were firing at some time during it, and its
readings download as CSV or JSON Lines through the same code as `hub sessions export`.
"""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response

from hub.derive.session import Session
from hub.store.sessions import ExportFormat, NoSamples, export_readings
from hub.web.context import Ctx, Reader
from hub.web.models import ErrorResponse, SessionOut
from hub.web.reader import ReadStoreLike

router = APIRouter(prefix="/api/sessions", tags=["sessions"], dependencies=[Reader])

_MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/x-ndjson"}
_SUFFIX = {"csv": "csv", "json": "jsonl"}


def _out(session: Session, store: ReadStoreLike) -> dict[str, Any]:
    fields = (name for name in SessionOut.model_fields if name not in ("duration_s", "alerts"))
    return {
        **{name: getattr(session, name) for name in fields},
        "duration_s": session.duration_s,
        "alerts": store.sessions.alerts(session),
    }


def _session(ctx: Ctx, session_id: str) -> Session:
    session = ctx.readers.get().sessions.get(session_id)
    if session is None:
        raise HTTPException(404, f"no session {session_id!r}")
    return session


@router.get("", response_model=list[SessionOut], summary="Drive sessions, newest first")
def list_sessions(
    ctx: Ctx,
    vehicle: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    store = ctx.readers.get()
    return [_out(s, store) for s in store.sessions.list(vehicle, limit)]


@router.get(
    "/{session_id}",
    response_model=SessionOut,
    responses={404: {"model": ErrorResponse}},
    summary="One drive session",
)
def get_session(ctx: Ctx, session_id: Annotated[str, Path(max_length=200)]) -> dict[str, Any]:
    return _out(_session(ctx, session_id), ctx.readers.get())


@router.get(
    "/{session_id}/export",
    response_class=Response,
    responses={
        200: {
            "description": "The session's readings (same as `hub sessions export`).",
            "content": {"text/csv": {}, "application/x-ndjson": {}},
        },
        404: {"model": ErrorResponse},
    },
    summary="Download a session's readings as CSV or JSON Lines",
)
def export_session(
    ctx: Ctx,
    session_id: Annotated[str, Path(max_length=200)],
    fmt: Annotated[
        ExportFormat,
        Query(alias="format", description="csv (one row per reading) or json (JSON Lines)."),
    ] = "csv",
) -> Response:
    session = _session(ctx, session_id)
    out = io.StringIO()
    try:
        export_readings(ctx.readers.get().sessions.readings(session), out, fmt)
    except NoSamples as exc:
        raise HTTPException(404, str(exc)) from None
    name = f"{session.id}.{_SUFFIX[fmt]}"
    return Response(
        out.getvalue(),
        media_type=_MEDIA[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
