"""Dead letters: what ingest refused, with why; replay them after a fix, or purge them."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query

from hub.web.context import Ctx, Private, Writer
from hub.web.models import (
    DeadLetterDetail,
    DeadLetterOut,
    ErrorResponse,
    PurgeRequest,
    PurgeResult,
    ReplayRequest,
    ReplayResult,
)
from hub.web.replay import replay

router = APIRouter(prefix="/api/dead-letters", tags=["dead letters"])

PREVIEW_BYTES = 4096


@router.get(
    "",
    response_model=list[DeadLetterOut],
    dependencies=[Private],
    summary="Dead letters, newest first (needs the token)",
)
def list_dead_letters(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    reason: Annotated[str | None, Query(max_length=100)] = None,
    after_id: Annotated[int, Query(ge=0, lt=2**63)] = 0,
) -> list[dict[str, Any]]:
    return ctx.readers.get().dead_letters(limit, reason, after_id)


@router.get(
    "/{dead_letter_id}",
    response_model=DeadLetterDetail,
    dependencies=[Private],
    responses={404: {"model": ErrorResponse}},
    summary="One dead letter with a preview of its payload (needs the token)",
)
def get_dead_letter(
    ctx: Ctx, dead_letter_id: Annotated[int, Path(ge=0, lt=2**63)]
) -> dict[str, Any]:
    found = ctx.readers.get().dead_letter(dead_letter_id)
    if found is None:
        raise HTTPException(404, f"no dead letter {dead_letter_id}")
    info, payload = found
    info["payload_preview"] = (payload or b"")[:PREVIEW_BYTES].decode("utf-8", "replace")
    return info


def _writer(ctx: Ctx) -> Any:
    if ctx.run_in_store is None or ctx.writer is None:
        raise HTTPException(503, "this API is not attached to a running hub's store")
    return ctx.writer


@router.post(
    "/replay",
    response_model=ReplayResult,
    dependencies=[Writer],
    responses={401: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    summary="Decode dead letters again and store what now decodes (needs the token)",
)
async def replay_dead_letters(ctx: Ctx, body: ReplayRequest) -> dict[str, Any]:
    store = _writer(ctx)
    if not body.ids and not body.reason:
        raise HTTPException(400, "name the dead letters to replay: 'ids', or 'reason'")
    if ctx.router is None:
        raise HTTPException(503, "no decoder is attached to replay with")
    assert ctx.run_in_store is not None
    outcome, committed = await ctx.run_in_store(
        replay,
        store,
        ctx.router,
        list(body.ids),
        body.reason,
        body.limit,
        time.time_ns() // 1_000_000,
    )
    if committed is not None and ctx.notify is not None:
        ctx.notify(committed)
    return outcome


@router.post(
    "/purge",
    response_model=PurgeResult,
    dependencies=[Writer],
    responses={401: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    summary="Delete dead letters (needs the token)",
)
async def purge(ctx: Ctx, body: PurgeRequest) -> dict[str, int]:
    store = _writer(ctx)
    assert ctx.run_in_store is not None
    purged = await ctx.run_in_store(store.purge_dead_letters, body.reason, body.before_ms)
    return {"purged": purged}
