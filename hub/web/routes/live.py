"""The live feed endpoint (WebSocket); see hub.web.live for the protocol."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, WebSocket

from hub.web.auth import bearer

router = APIRouter()


@router.websocket("/api/live")
async def live(websocket: WebSocket) -> None:
    ctx = websocket.app.state.ctx
    if ctx.settings.read_requires_token:
        # Browsers cannot set headers on a WebSocket: the token may come as ?token=.
        token = websocket.query_params.get("token") or bearer(
            websocket.headers.get("authorization")
        )
        if not await asyncio.to_thread(ctx.tokens.check, token):
            await websocket.close(code=4401, reason="this needs the API token")
            return
    await ctx.live.serve(websocket)
