"""The HTTP API process: authenticates, validates, appends events, serves reads (metrics: metrics.py).

It never fans out or delivers; workers do that from the event log. `create_app(settings)`
builds the app (tests use it directly); `app_from_env()` is the factory uvicorn runs.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import MaxConnectionsError
from scim2_models import SCIMException
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from muster import connection
from muster.api import bodies, crowd, openapi, opening, scim, web, writes
from muster.api.hotpath import HotPath
from muster.api.limits import BodyLimit
from muster.api.livehub import LiveHub
from muster.api.replication import Replicated
from muster.api.routes import (
    accounts,
    audit,
    callbacks,
    deliveries,
    directory,
    dms,
    follows,
    inbound,
    incidents,
    ops,
    posts,
    reads,
    rollcalls,
    stream,
    subscriptions,
)
from muster.api.routes import scim as scim_routes
from muster.api.routes.inbound import MAILGUN_PATH
from muster.api.web.pagecache import PageCache
from muster.errors import ApiError
from muster.logs import configure_logging
from muster.settings import Settings, load_settings

log = structlog.get_logger("muster.api")

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    400: "bad_request",
    413: "payload_too_large",
}


class MusterApi(FastAPI):
    """FastAPI, with the ingest routes served in front of its stack (muster.api.hotpath)."""

    hot_path: HotPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = self.hot_path
        if hot is not None and hot.takes(scope):
            await hot(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> MusterApi:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = await opening.open_state(settings, oidc=True)
        redis, lag = st.redis, st.lag
        live_redis = crowd.live_client(settings)
        app.state.muster = st
        auth_redis = crowd.auth_client(settings)
        await st.tokens.start(auth_redis)
        if settings.admin_token:
            await writes.ensure_admin(st, settings.admin_token)
        await lag.refresh()
        lag.start()
        live = LiveHub(live_redis, block_ms=settings.consumer_block_ms)
        await live.start()
        app.state.live = live
        app.state.pages = PageCache()
        log.info("api ready", partitions=settings.partitions, node=st.ids.node)
        try:
            yield
        finally:
            await live.stop()
            await lag.stop()
            await st.tokens.stop()
            await auth_redis.aclose()
            await live_redis.aclose()
            await redis.aclose()

    app = MusterApi(
        title="Muster",
        version="0.1.0",
        description="Self-hosted crisis and incident communication on the follow model.",
        lifespan=lifespan,
        # Muster's observability is /metrics and structlog; FastAPI's native OpenTelemetry
        # hook otherwise checks for configured providers on every request (~3 µs per post).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    routers = (
        accounts,
        directory,
        follows,
        posts,
        reads,
        deliveries,
        dms,
        stream,
        audit,
        ops,
        subscriptions,
        incidents,
        inbound,
        rollcalls,
        callbacks,
        web,
    )
    for module in (*routers, scim_routes):
        app.include_router(module.router)
    openapi.install(app)

    # Errors on /scim/v2 are SCIM error bodies (RFC 7644 §3.12), everywhere else docs/api.md's.
    @app.exception_handler(SCIMException)
    async def scim_error(request: Request, exc: SCIMException) -> Response:
        return scim.from_exception(exc)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if scim.is_scim(request.url.path):
            return scim.from_api_error(exc)
        return bodies.from_exception(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_params(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        message = str(first.get("msg", "invalid request"))
        if scim.is_scim(request.url.path):
            return scim.error(400, f"{where}: {message}" if where else message, "invalidValue")
        return bodies.error(422, "invalid_parameter", message, field=where)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        if scim.is_scim(request.url.path):
            response = scim.error(exc.status_code, str(exc.detail))
        else:
            response = bodies.error(exc.status_code, code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error", path=request.url.path)
        message = "something went wrong on our side; it is logged"
        if scim.is_scim(request.url.path):
            return scim.error(500, message)
        return bodies.error(500, "internal_error", message)

    # Pool exhaustion is a ConnectionError to redis-py; its own handler (found first along the
    # exception's MRO) answers 429 `busy`, so 503 `unavailable` means Redis is unreachable.
    @app.exception_handler(MaxConnectionsError)
    async def busy(request: Request, exc: Exception) -> Response:
        response = await crowd.busy(request, exc)
        if scim.is_scim(request.url.path):
            retry_after = response.headers["Retry-After"]
            response = scim.error(429, "too many requests in hand; retry")
            response.headers["Retry-After"] = retry_after
        return response

    # Down, failing over or migrating a slot (connection.UNAVAILABLE): retry, never a 500.
    async def redis_down(request: Request, exc: Exception) -> Response:
        log.error("redis unavailable", error=str(exc))
        message = "the event log is unavailable; retry"
        if scim.is_scim(request.url.path):
            response = scim.error(503, message)
            response.headers["Retry-After"] = "2"
            return response
        return bodies.error(503, "unavailable", message, retry_after=2)

    for unavailable in connection.UNAVAILABLE:
        app.add_exception_handler(unavailable, redis_down)  # type: ignore[arg-type]  # all Exceptions

    # Every write: the body limit first (its 413 before anything reads), then the replica wait.
    # The ingest routes get the same two in front of FastAPI (HotPath's `outer`).
    mail = {MAILGUN_PATH: max(settings.max_body_bytes, settings.mail_in_max_bytes * 2)}
    outer: list[tuple[Any, dict[str, Any]]] = [
        (BodyLimit, {"max_bytes": settings.max_body_bytes, "larger": mail})
    ]
    if settings.write_replicas:
        wait = {"replicas": settings.write_replicas, "wait_ms": settings.write_wait_ms}
        outer.append((Replicated, wait))
    for cls, options in reversed(outer):  # the last added is the outermost
        app.add_middleware(cls, **options)
    app.hot_path = HotPath(
        app,
        functools.partial(FastAPI.__call__, app),
        [functools.partial(cls, **options) for cls, options in outer],
    )
    return app


def app_from_env() -> MusterApi:
    """uvicorn factory (`muster api`): settings read once, logging set up once, the open-files
    limit raised once (crowd.py), per process."""
    settings = load_settings()
    configure_logging(settings, process="api")
    before, after = crowd.raise_open_files_limit()
    log.info("open files limit", soft=after, was=before)
    return create_app(settings)
