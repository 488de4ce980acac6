"""Devices: what reports to the hub, when it last did, and whether it says it is online."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from hub.web.context import Ctx, Reader
from hub.web.models import DeviceOut, ErrorResponse
from hub.web.reader import device_list

router = APIRouter(prefix="/api/devices", tags=["devices"], dependencies=[Reader])


@router.get("", response_model=list[DeviceOut], summary="All devices")
def list_devices(ctx: Ctx) -> list[dict[str, object]]:
    return device_list(ctx.readers.get())


@router.get(
    "/{name}",
    response_model=DeviceOut,
    responses={404: {"model": ErrorResponse}},
    summary="One device",
)
def get_device(ctx: Ctx, name: Annotated[str, Path(max_length=200)]) -> dict[str, object]:
    found = device_list(ctx.readers.get(), name)
    if not found:
        raise HTTPException(404, f"no device named {name!r}")
    return found[0]
