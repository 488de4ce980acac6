"""RC drive sessions (their readings come from /api/query over the session's time range)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from hub.derive.session import Session
from hub.web.context import Ctx, Reader
from hub.web.models import ErrorResponse, SessionOut

router = APIRouter(prefix="/api/sessions", tags=["sessions"], dependencies=[Reader])


def _out(session: Session) -> dict[str, Any]:
    return {
        **{
            name: getattr(session, name) for name in SessionOut.model_fields if name != "duration_s"
        },
        "duration_s": session.duration_s,
    }


@router.get("", response_model=list[SessionOut], summary="Drive sessions, newest first")
def list_sessions(
    ctx: Ctx,
    vehicle: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[dict[str, Any]]:
    return [_out(s) for s in ctx.readers.get().sessions.list(vehicle, limit)]


@router.get(
    "/{session_id}",
    response_model=SessionOut,
    responses={404: {"model": ErrorResponse}},
    summary="One drive session",
)
def get_session(ctx: Ctx, session_id: Annotated[str, Path(max_length=200)]) -> dict[str, Any]:
    session = ctx.readers.get().sessions.get(session_id)
    if session is None:
        raise HTTPException(404, f"no session {session_id!r}")
    return _out(session)
