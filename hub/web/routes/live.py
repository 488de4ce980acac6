"""The live feed endpoint (WebSocket); see hub.web.live for the protocol."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, WebSocket

from hub.web.auth import bearer
from hub.web.context import WebContext, check_token

router = APIRouter()


@router.websocket("/api/live")
async def live(websocket: WebSocket) -> None:
    ctx: WebContext = websocket.app.state.ctx
    if not ctx.settings.public_read:
        # Browsers cannot set headers on a WebSocket: the token may come as ?token=.
        token = websocket.query_params.get("token") or bearer(
            websocket.headers.get("authorization")
        )
        try:
            await check_token(ctx, websocket, token)
        except HTTPException as exc:
            # 4000 + the HTTP status, the usual mapping for WebSocket application close codes.
            await websocket.close(code=4000 + exc.status_code, reason=str(exc.detail)[:120])
            return
    await ctx.live.serve(websocket)
