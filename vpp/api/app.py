"""The FastAPI application: health endpoints at the root, resources under ``/api/v1``."""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from vpp.api.routes import (
    awards,
    bids,
    commands,
    dispatch,
    fleet,
    health,
    history,
    keys,
    schedules,
    sites,
)
from vpp.console.app import install as install_console
from vpp.console.sessions import COOKIE
from vpp.services import RefusedError, Services
from vpp.store.bids import ConflictError, FourEyesError, InvalidBidError, NotFoundError
from vpp.store.fencing import FencedError

API_PREFIX = "/api/v1"
log = logging.getLogger(__name__)

API_LATENCY = Histogram(
    "vpp_api_request_duration_seconds",
    "API request latency",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

TAGS = [
    {"name": "fleet", "description": "The fleet hierarchy: fleet → groups → sites, with bounds."},
    {"name": "sites", "description": "Site twins, their transitions and commands."},
    {"name": "bids", "description": "The bid review workflow: edit, approve, reject, submit."},
    {"name": "awards", "description": "What the market awarded."},
    {"name": "dispatch", "description": "Targets vs delivery per interval and group."},
    {"name": "commands", "description": "Per-site commands and their acks."},
    {"name": "schedules", "description": "Peak-shaving plans per site, dispatched as targets."},
    {"name": "admin", "description": "API keys and the audit log."},
    {"name": "health", "description": "Liveness, readiness and metrics."},
]


class LatencyMiddleware:
    """Records every request's latency by route template (pure ASGI: no per-request task)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            # a router included under /api/v1 reports its path without that prefix
            path = getattr(route, "path", "unmatched")
            if route is not None and scope["path"].startswith(API_PREFIX):
                path = API_PREFIX + path
            API_LATENCY.labels(scope["method"], path, str(status)).observe(
                time.perf_counter() - started
            )


async def _reply(send: Send, status: int, body: dict[str, Any], headers: list[Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


class GateMiddleware:
    """What is refused before a request's body is parsed (pure ASGI).

    - **Authentication**: every ``/api/v1`` request must carry a valid ``X-API-Key``; a
      missing or bad key gets 401 here, so an unauthenticated client cannot make the
      engine read or parse its body. Roles are still checked per route.
    - **Size**: a body larger than ``max_body_bytes`` gets 413 — from its Content-Length
      before a byte is read, or as soon as a chunked body passes the limit.
    - **NUL**: PostgreSQL refuses a NUL character in text; one in the path, the query or a
      JSON body (``\\u0000``) gets 422 naming where, never a 500 from the database.
    - **Request id**: every request carries one (``X-Request-ID``, taken from the client
      or made here), returned in the response and logged with any error.
    """

    def __init__(
        self,
        app: ASGIApp,
        services: Services,
        max_body_bytes: int,
        max_inflight_per_key: int = 8,
    ) -> None:
        self.app = app
        self.services = services
        self.max_body = max_body_bytes
        self.max_inflight = max_inflight_per_key
        self.inflight: dict[str, int] = {}  # by key id (or console session): requests now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        rid = [(b"x-request-id", request_id.encode("latin-1"))]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *rid]}
            await send(message)

        who = _identity(scope, headers)
        if who is not None:
            if self.inflight.get(who, 0) >= self.max_inflight:
                THROTTLED.inc()
                await _reply(
                    send_with_id,
                    429,
                    {
                        "detail": f"more than {self.max_inflight} requests in flight for this "
                        "key or session (api.max_inflight_per_key); retry when one answers"
                    },
                    [(b"retry-after", b"1")],
                )
                return
            self.inflight[who] = self.inflight.get(who, 0) + 1
        try:
            await self._gate(scope, receive, send_with_id, headers)
        finally:
            if who is not None:
                left = self.inflight[who] - 1
                if left:
                    self.inflight[who] = left
                else:
                    del self.inflight[who]

    async def _gate(self, scope: Scope, receive: Receive, send: Send, headers: dict) -> None:
        raw_path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        for where, raw in (("path", raw_path), ("query", query)):
            if b"%00" in raw or b"\x00" in raw or "\x00" in scope["path"]:
                await _reply(
                    send,
                    422,
                    {
                        "detail": [
                            {
                                "loc": [where],
                                "type": "nul_character",
                                "msg": "a NUL character is not allowed",
                            }
                        ]
                    },
                    [],
                )
                return
        if scope["path"].startswith(API_PREFIX):
            key = headers.get(b"x-api-key", b"").decode("latin-1") or None
            if await self.services.keys.verify_async(key) is None:
                await _reply(
                    send,
                    401,
                    {"detail": "missing or invalid API key (X-API-Key)"},
                    [(b"www-authenticate", b"APIKey")],
                )
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _reply(send, 413, {"detail": f"the body exceeds {self.max_body} bytes"}, [])
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        # The body (at most max_body_bytes) is read once here and replayed to the route.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                await _reply(send, 413, {"detail": f"the body exceeds {self.max_body} bytes"}, [])
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _has_nul(body):
            await _reply(
                send,
                422,
                {
                    "detail": [
                        {
                            "loc": ["body"],
                            "type": "nul_character",
                            "msg": "a NUL character (\\u0000) is not allowed",
                        }
                    ]
                },
                [],
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


THROTTLED = Counter(
    "vpp_api_throttled_total", "requests refused (429): too many in flight for one key"
)


def _identity(scope: Scope, headers: dict[bytes, bytes]) -> str | None:
    """Whose request this is, for the in-flight bound: the API key's id (``vpp_<id>_...``;
    not verified yet, so a forged id only throttles itself; keyless and malformed requests
    share one bound) or the console's session cookie. Health and metrics are nobody's."""
    path = scope["path"]
    if path.startswith(API_PREFIX):
        parts = headers.get(b"x-api-key", b"").decode("latin-1").split("_", 2)
        return "key:" + parts[1][:64] if len(parts) == 3 else "anonymous"
    if path.startswith("/console"):
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return "session:" + value[:64]
        return None
    return None


def _json_safe(value: Any) -> Any:
    """Non-finite floats as strings: JSON has no Infinity or NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        # A body with `Infinity` (Python's json accepts it) fails validation, and the
        # error echoes the input back: without this it would be a 500 instead of a 422.
        detail = _json_safe(jsonable_encoder(exc.errors()))
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        request_id = request.scope.get("state", {}).get("request_id", "-")
        log.error(
            "unhandled error on %s %s",
            request.method,
            request.url.path,
            exc_info=exc,
            extra={"request_id": request_id},
        )
        return JSONResponse(
            {"detail": "internal error", "request_id": request_id},
            status_code=500,
            headers={"X-Request-ID": request_id},
        )

    @app.exception_handler(sa.exc.TimeoutError)
    async def busy(_: Request, exc: sa.exc.TimeoutError) -> JSONResponse:
        # the API's own pool is exhausted (api.db_pool_size): say so at once, and the
        # engine's pool, which this one cannot reach, is untouched
        return JSONResponse(
            {"detail": "every database connection of the API is busy; retry shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(RefusedError)
    async def refused(_: Request, exc: RefusedError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ConflictError)
    async def conflict(_: Request, exc: ConflictError) -> JSONResponse:
        current = exc.current.to_json() if exc.current is not None else None
        return JSONResponse({"detail": str(exc), "current": current}, status_code=409)

    @app.exception_handler(FourEyesError)
    async def four_eyes(_: Request, exc: FourEyesError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=403)

    @app.exception_handler(FencedError)
    async def fenced(_: Request, exc: FencedError) -> JSONResponse:
        # The bids went back to approved: the leading instance submits them at their gate.
        return JSONResponse(
            {
                "detail": f"not submitted: {exc}. This instance does not lead the bidder; the "
                "bid is approved and the leading instance submits it before its gate"
            },
            status_code=409,
        )

    @app.exception_handler(InvalidBidError)
    async def invalid(_: Request, exc: InvalidBidError) -> JSONResponse:
        detail: list[dict[str, Any]] = [
            {"loc": ["body"], "msg": p, "type": "bid_rule"} for p in exc.problems
        ]
        return JSONResponse({"detail": detail}, status_code=422)


def _offline_docs(app: FastAPI) -> None:
    """``/docs`` from assets shipped in the package (swagger-ui-bundle), never a CDN: the
    API documentation works on a machine with no internet."""
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="VPP engine API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


NO_NUL = "^[^\\u0000]*$"

# A JSON escape \u0000 preceded by an even number of backslashes (an odd number makes the
# first backslash an escaped one, so the text is a literal "\u0000", which is allowed).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)


def _has_nul(body: bytes) -> bool:
    """True if a JSON body holds a NUL character, raw or escaped (PostgreSQL refuses it)."""
    return b"\x00" in body or (b"u0000" in body.lower() and _NUL_ESCAPE.search(body) is not None)


def _declare_no_nul(node: Any) -> None:
    """Every string the API takes refuses NUL (the gate enforces it): say so in the schema,
    on every string without a pattern of its own (patterns never allow NUL here)."""
    if isinstance(node, dict):
        if (
            node.get("type") == "string"
            and "pattern" not in node
            and "enum" not in node
            and ("format" not in node)
        ):
            node["pattern"] = NO_NUL
        for value in node.values():
            _declare_no_nul(value)
    elif isinstance(node, list):
        for value in node:
            _declare_no_nul(value)


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = original()
            _declare_no_nul(spec)
            app.openapi_schema = spec
        return app.openapi_schema

    return openapi


def create_app(
    services: Services,
    *,
    max_body_bytes: int = 1_048_576,
    max_inflight_per_key: int = 8,
    secure_cookies: str = "auto",
) -> FastAPI:
    app = FastAPI(
        title="VPP engine",
        version="0.1.0",
        summary="Fleet twins, bid review, awards and dispatch of a battery virtual power plant",
        openapi_tags=TAGS,
        docs_url=None,
        redoc_url=None,
    )
    _offline_docs(app)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    app.state.services = services
    app.add_middleware(
        GateMiddleware,
        services=services,
        max_body_bytes=max_body_bytes,
        max_inflight_per_key=max_inflight_per_key,
    )
    app.add_middleware(LatencyMiddleware)
    _handlers(app)
    app.include_router(health.router)
    for module in (fleet, sites, bids, awards, dispatch, commands, schedules, history, keys):
        app.include_router(module.router, prefix=API_PREFIX)
    install_console(app, services)
    app.state.secure_cookies = secure_cookies
    return app
