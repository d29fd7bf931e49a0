"""The ingest routes, POST /v1/posts and POST /v1/dms, served in front of FastAPI.

On these two routes FastAPI's per-request machinery costs more CPU than the endpoint itself:
matching the path against every router, solving the Idempotency-Key header parameter, its
request and response wrappers, and the layers Starlette puts around every app (its error
middleware, which wraps `send`; FastAPI's telemetry and body-limit layers; the app's own).
Served inside that stack the API reached 0.56 of a bare one-XADD endpoint's posts/s; in
front of it, 0.61-0.62 (tests/benchmarks/ingest.py, docs/performance.md; the goal is 0.6).
So `MusterApi.__call__` hands these requests to `HotPath` before Starlette sees them.
HotPath runs the same body limit and replica wait as every other write (the `outer`
middleware, built once), calls the endpoint functions directly, and turns their exceptions
into responses with the app's own exception handlers — the catch-all included, which
Starlette's error middleware would otherwise call — so the answers are the same. Anything it does not fully handle (a
root_path, an Idempotency-Key FastAPI would refuse) goes to FastAPI's whole stack
unchanged. The routes stay registered there and in /openapi.json.

The endpoints must keep the signature `(request, idempotency_key)` and take no FastAPI
dependencies; tests/api/test_hotpath.py checks both and that the answers match FastAPI's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from muster.api.routes import posts

Endpoint = Callable[[Request, str | None], Awaitable[Response]]
ROUTES: dict[str, Endpoint] = {"/v1/posts": posts.create_post, "/v1/dms": posts.create_dm}
"""POST path → endpoint, for the requests this serves itself."""

Middleware = Callable[[ASGIApp], ASGIApp]


class HotPath:
    """Serves ROUTES for `app` (a FastAPI app), through `outer` (outermost first), falling
    back to `fallback` (the app's whole stack) for what it leaves to FastAPI."""

    def __init__(self, app: Any, fallback: ASGIApp, outer: Sequence[Middleware] = ()) -> None:
        self.app = app
        self.fallback = fallback
        stack: ASGIApp = self._serve
        for wrap in reversed(outer):
            stack = wrap(stack)
        self.stack = stack

    @staticmethod
    def takes(scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] in ROUTES
            and not scope.get("root_path")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self.app  # as Starlette sets it: handlers and state are read from it
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.stack(scope, receive, tracked)
        except Exception as exc:
            # From the outer layers (the endpoint's own are answered in _serve; the replica
            # wait answers a Redis failure itself): a bug there. Answered as the app would,
            # unless already answering.
            if started:
                raise
            request = Request(scope, receive)
            response = await _handler_for(self.app.exception_handlers, exc)(request, exc)
            await response(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = None
        for name, value in scope["headers"]:
            if name == b"idempotency-key":
                key = value.decode("latin-1")  # as Starlette's Headers decode it
                break
        if key is not None and len(key) > posts.IDEMPOTENCY_KEY_MAX:
            await self.fallback(scope, receive, send)  # FastAPI's own 422 for the header
            return
        request = Request(scope, receive)
        try:
            response = await ROUTES[scope["path"]](request, key)
        except Exception as exc:
            response = await _handler_for(self.app.exception_handlers, exc)(request, exc)
        await response(scope, send=send, receive=receive)


def _handler_for(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The app's handler for `exc`, looked up along its MRO as Starlette does (the app
    always has one for Exception: muster.api.app's catch-all, which logs and answers 500)."""
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    raise exc
