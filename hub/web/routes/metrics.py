"""The metric catalog: every metric the hub knows, with unit and Home Assistant classes."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path

from hub.model import CATALOG
from hub.web.context import Reader
from hub.web.models import ErrorResponse, MetricOut

router = APIRouter(prefix="/api/metrics", tags=["metrics"], dependencies=[Reader])


@router.get("", response_model=list[MetricOut], summary="The metric catalog")
def list_metrics() -> list[dict[str, Any]]:
    return [dataclasses.asdict(spec) for spec in CATALOG.values()]


@router.get(
    "/{name}",
    response_model=MetricOut,
    responses={404: {"model": ErrorResponse}},
    summary="One metric",
)
def get_metric(name: Annotated[str, Path(max_length=100)]) -> dict[str, Any]:
    spec = CATALOG.get(name)
    if spec is None:
        raise HTTPException(404, f"no metric named {name!r} in the catalog")
    return dataclasses.asdict(spec)
