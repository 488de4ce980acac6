"""Time-series queries, downsampled in the store so peaks survive (min/max per bucket)."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from hub.times import TIME_HELP, parse_time
from hub.web.context import Ctx, Reader
from hub.web.models import ErrorResponse, LatestValue, QueryResult
from hub.web.reader import latest

router = APIRouter(prefix="/api", tags=["query"], dependencies=[Reader])

MAX_SPAN_MS = 10 * 365 * 86_400_000


def _time(name: str, value: str | None, synonym: str, other: str | None, now: float) -> int | None:
    """A query time as Unix ms: digits are Unix ms (what the dashboard sends), anything else
    is read as the CLI reads it (`hub.times`)."""
    if value is not None and other is not None:
        raise HTTPException(400, f"give one of '{synonym}' and '{name}', not both")
    if other is not None:
        name, value = synonym, other
    if value is None:
        return None
    text = value.strip()
    try:
        ms = int(text) if text.lstrip("-").isdigit() else parse_time(text, now)
    except (ValueError, OverflowError) as exc:
        raise HTTPException(400, f"'{name}': {exc}; or Unix milliseconds") from None
    if not -(2**53) < ms < 2**53:
        raise HTTPException(400, f"'{name}' is out of range")
    return ms


def _parse_tags(tag: list[str]) -> dict[str, str]:
    tags = {}
    for item in tag:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise HTTPException(400, f"tag {item!r} must be written key=value, e.g. sensor=pm_2_5")
        tags[key] = value
    return tags


@router.get(
    "/query",
    response_model=QueryResult,
    responses={400: {"model": ErrorResponse}},
    summary="Samples of one metric over a time range, at most max_points per series",
    description=(
        "Each series comes back as columns (ts, mean, min, max, count). When the range holds "
        "more samples than `max_points`, a point is a time bucket: its mean, and its min and "
        "max so that peaks survive. Long ranges read the 1-minute and 1-hour rollups."
    ),
)
def query(
    ctx: Ctx,
    metric: Annotated[
        str, Query(min_length=1, max_length=100, description="Metric name, e.g. pm2_5.")
    ],
    device: Annotated[str | None, Query(max_length=200, description="Only this device.")] = None,
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=64,
            description=f"Start: Unix ms, or {TIME_HELP} (default: an hour before the end).",
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(max_length=64, description=f"End: Unix ms, or {TIME_HELP} (default: now)."),
    ] = None,
    since: Annotated[
        str | None,
        Query(max_length=64, description="Start, as `hub query --since` takes it: same as `from`."),
    ] = None,
    until: Annotated[
        str | None,
        Query(max_length=64, description="End, as `hub query --until` takes it: same as `to`."),
    ] = None,
    max_points: Annotated[int, Query(ge=1, description="Most points per series.")] = 1000,
    tag: Annotated[
        list[str], Query(max_length=20, description="Only series with this tag, key=value.")
    ] = [],  # noqa: B006 - FastAPI copies defaults
) -> Response:
    if max_points > ctx.settings.max_points:
        raise HTTPException(400, f"max_points may be at most {ctx.settings.max_points}")
    now = time.time()
    to_ms = _time("to", to, "until", until, now)
    from_ms = _time("from", from_, "since", since, now)
    end = to_ms if to_ms is not None else int(now * 1000)
    start = from_ms if from_ms is not None else end - 3_600_000
    if start > end:
        raise HTTPException(400, "'from' must not be after 'to'")
    if end - start > MAX_SPAN_MS:
        raise HTTPException(400, "the range may span at most 10 years")
    tags = _parse_tags(tag)
    store = ctx.readers.get()
    result = store.query(metric, device, start, end, max_points, tags or None)
    series = []
    for s in result:
        points = s.points
        series.append(
            {
                "device": s.series.device,
                "metric": s.series.metric,
                "tags": dict(s.series.tags),
                "unit": s.series.unit,
                "source": s.series.source,
                "resolution": s.resolution,
                "ts": [p.ts for p in points],
                "mean": [p.mean for p in points],
                "min": [p.min for p in points],
                "max": [p.max for p in points],
                "count": [p.count for p in points],
            }
        )
    body = {
        "metric": metric,
        "from_ms": start,
        "to_ms": end,
        "max_points": max_points,
        "series": series,
    }
    # orjson straight to bytes: a week of points per series is the hot path of the dashboard.
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("/latest", response_model=list[LatestValue], summary="Newest value of every series")
def latest_values(
    ctx: Ctx,
    device: Annotated[str | None, Query(max_length=200)] = None,
    metric: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    rows = latest(ctx.readers.get(), device, metric)
    return Response(orjson.dumps(rows), media_type="application/json")
