"""The API's documentation, served by the hub itself: nothing is loaded from the internet.

FastAPI's Swagger UI comes from a CDN, so on a LAN without internet (or behind the dashboard's
content security policy) `/api/docs` was a blank page. This page is plain HTML rendered on the
server from the same OpenAPI document, with no script: every operation with its parameters,
request body fields and responses. The machine-readable document is at `/api/openapi.json`,
and at `/openapi.json` where tools look for it first.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

__all__ = ["install_docs"]

DOCS_PATH = "/api/docs"
OPENAPI_PATH = "/api/openapi.json"
_METHODS = ("get", "post", "put", "patch", "delete")

_STYLE = """
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem 1.5rem;color:#1d232a}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ccd;text-transform:capitalize}
section{margin:1.2rem 0 1.8rem}h3{font-size:1rem;margin:.2rem 0;font-family:ui-monospace,monospace}
.m{display:inline-block;min-width:4.2rem;font-weight:700}.get{color:#1f6f43}.post{color:#8a4b00}
.delete{color:#a11}table{border-collapse:collapse;margin:.4rem 0;width:100%}
td,th{border:1px solid #dde;padding:.2rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f4f7}code{font-family:ui-monospace,monospace}.note{color:#555}
nav a{margin-right:1rem}
"""


def install_docs(app: FastAPI) -> None:
    """Add /api/docs (HTML), /openapi.json (the document again) and /docs (a redirect)."""

    @app.get(DOCS_PATH, include_in_schema=False)
    def api_docs() -> HTMLResponse:
        return HTMLResponse(render(app.openapi()))

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_at_root() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs_redirect() -> RedirectResponse:
        return RedirectResponse(DOCS_PATH)


def render(spec: dict[str, Any]) -> str:
    info = spec.get("info", {})
    title = escape(str(info.get("title", "API")))
    by_tag: dict[str, list[str]] = {}
    for path, operations in spec.get("paths", {}).items():
        for method in _METHODS:
            if method in operations:
                op = operations[method]
                tag = (op.get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append(_operation(spec, method, path, op))
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}: API</title>",
        f"<meta name=viewport content='width=device-width'><style>{_STYLE}</style></head><body>",
        f"<h1>{title} API</h1><p class=note>version {escape(str(info.get('version', '')))}</p>",
        f"<p>{escape(str(info.get('description', '')))}</p>",
        f'<p>The OpenAPI document: <a href="{OPENAPI_PATH}">{OPENAPI_PATH}</a> '
        "(also at <code>/openapi.json</code>). Times in queries are Unix milliseconds, a "
        "duration ago (<code>since=5m</code>) or an ISO time "
        "(<code>from=2026-12-01T10:00</code>, local time unless it has an offset). A query "
        "parameter a route does not take is an error (400).</p>",
        "<nav>" + "".join(f'<a href="#{escape(t)}">{escape(t)}</a>' for t in by_tag) + "</nav>",
    ]
    for tag, operations in by_tag.items():
        parts.append(f'<h2 id="{escape(tag)}">{escape(tag)}</h2>')
        parts.extend(operations)
    parts.append("</body></html>")
    return "\n".join(parts)


def _operation(spec: dict[str, Any], method: str, path: str, op: dict[str, Any]) -> str:
    out = [
        "<section>",
        f"<h3><span class='m {method}'>{method.upper()}</span>{escape(path)}</h3>",
    ]
    if op.get("summary"):
        out.append(f"<p><b>{escape(op['summary'])}</b></p>")
    if op.get("description"):
        out.append(f"<p>{escape(op['description'])}</p>")
    if op.get("security"):
        out.append("<p class=note>Needs the API token: <code>Authorization: Bearer …</code></p>")
    params = op.get("parameters", [])
    if params:
        out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>about</th></tr>")
        for p in params:
            required = " (required)" if p.get("required") else ""
            schema = p.get("schema", {})
            about = p.get("description") or schema.get("description") or ""
            default = schema.get("default")
            if default not in (None, []):
                about += f" Default: {default}."
            out.append(
                f"<tr><td><code>{escape(p['name'])}</code>{required}</td>"
                f"<td>{escape(p.get('in', ''))}</td><td>{escape(_type(schema))}</td>"
                f"<td>{escape(about)}</td></tr>"
            )
        out.append("</table>")
    body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    if body:
        out.append(f"<p>Request body (JSON): {escape(_type(body.get('schema', {})))}</p>")
        out.append(_fields(spec, body.get("schema", {})))
    responses = op.get("responses", {})
    if responses:
        items = []
        for code, response in responses.items():
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            shape = f" ({_type(schema)})" if schema else ""
            items.append(f"<code>{escape(code)}</code> {escape(response.get('description', ''))}"
                         f"{escape(shape)}")  # fmt: skip
        out.append("<p>Responses: " + "; ".join(items) + "</p>")
    out.append("</section>")
    return "\n".join(out)


def _fields(spec: dict[str, Any], schema: dict[str, Any]) -> str:
    resolved = _resolve(spec, schema)
    properties = resolved.get("properties", {})
    if not properties:
        return ""
    required = set(resolved.get("required", []))
    rows = ["<table><tr><th>field</th><th>type</th><th>about</th></tr>"]
    for name, prop in properties.items():
        mark = " (required)" if name in required else ""
        rows.append(
            f"<tr><td><code>{escape(name)}</code>{mark}</td><td>{escape(_type(prop))}</td>"
            f"<td>{escape(str(prop.get('description', '')))}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        found = spec.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[1], {})
        return dict(found)
    return schema


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            kinds = [_type(s) for s in schema[key]]
            return " or ".join(k for k in kinds if k != "null") + (
                " or null" if "null" in kinds else ""
            )
    kind = schema.get("type")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"map of {_type(extra) if isinstance(extra, dict) else 'any'}"
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    return str(kind or "any")
