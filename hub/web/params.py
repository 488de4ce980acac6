"""Query parameters a route does not take are an error, not silently ignored.

A misspelt `sincee=5m` used to be dropped and the default hour served, which looks like a
working query with the wrong answer. Every API route gets this dependency (app-wide): it
compares the request's query parameters with the ones the route (and its dependencies)
declare, and answers 400 naming the unknown ones, with a close match when there is one.
"""

from __future__ import annotations

import difflib
from typing import Any

from fastapi import HTTPException
from fastapi.dependencies.models import Dependant
from starlette.requests import HTTPConnection

__all__ = ["reject_unknown_query_parameters"]

_declared_by_route: dict[int, tuple[str, ...]] = {}  # id(route) -> names; routes live as long


def _declared(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _declared(sub)
    return names


def _allowed(route: Any) -> tuple[str, ...] | None:
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return None
    key = id(route)
    names = _declared_by_route.get(key)
    if names is None:
        names = _declared_by_route[key] = tuple(sorted(_declared(dependant)))
    return names


def _describe(name: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    return f"'{name}' (did you mean '{close[0]}'?)" if close else f"'{name}'"


def reject_unknown_query_parameters(connection: HTTPConnection) -> None:
    if connection.scope["type"] != "http":
        return  # the live WebSocket reads its own parameters
    allowed = _allowed(connection.scope.get("route"))
    if allowed is None:
        return
    unknown = [name for name in dict.fromkeys(connection.query_params) if name not in allowed]
    if not unknown:
        return
    names = ", ".join(_describe(name, allowed) for name in unknown)
    plural = "s" if len(unknown) > 1 else ""
    path = connection.url.path
    takes = (
        f"{path} takes: {', '.join(allowed)}" if allowed else f"{path} takes no query parameters"
    )
    raise HTTPException(400, f"unknown query parameter{plural} {names}; {takes}")
