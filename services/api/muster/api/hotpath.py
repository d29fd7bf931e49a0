"""The ingest routes, POST /v1/posts and POST /v1/dms, served without FastAPI's router.

On these two routes FastAPI's per-request machinery (matching the path against every
router, solving the Idempotency-Key header parameter, its request and response wrappers)
costs more CPU than the endpoint itself: the API reached a third of a bare one-XADD
endpoint's posts/s (tests/benchmarks/ingest.py; the issue asks for 0.6). This middleware
calls the same endpoint functions directly and turns their exceptions into responses with
the app's own exception handlers, so the answers are the same; anything it does not fully
handle — another route or method, a root_path, an Idempotency-Key FastAPI would refuse —
goes on to FastAPI unchanged. The routes stay registered there and in /openapi.json.

The endpoints must keep the signature `(request, idempotency_key)` and take no FastAPI
dependencies; tests/api/test_hotpath.py checks both and that the answers match FastAPI's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from muster.api.routes import posts

Endpoint = Callable[[Request, str | None], Awaitable[Response]]
ROUTES: dict[str, Endpoint] = {"/v1/posts": posts.create_post, "/v1/dms": posts.create_dm}
"""POST path → endpoint, for the requests this middleware answers itself."""


class HotPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        key = None
        for name, value in scope["headers"]:
            if name == b"idempotency-key":
                key = value.decode("latin-1")  # as Starlette's Headers decode it
                break
        if key is not None and len(key) > posts.IDEMPOTENCY_KEY_MAX:
            await self.app(scope, receive, send)  # FastAPI's own 422 for the header
            return
        request = Request(scope, receive)
        try:
            response = await endpoint(request, key)
        except Exception as exc:
            handler = _handler_for(scope["app"].exception_handlers, exc)
            if handler is None:
                raise  # to ServerErrorMiddleware's 500, as from inside FastAPI
            response = await handler(request, exc)
        await response(scope, receive, send)


def _handler_for(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The app's handler for `exc`, looked up along its MRO as Starlette does; the catch-all
    `Exception` handler is left to ServerErrorMiddleware, which also logs and re-raises."""
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
