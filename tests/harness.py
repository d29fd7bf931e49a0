"""The pieces the api, timeline, delivery and audit test fixtures share, written once.

- `bearer(token)`: the Authorization header of a token (none for None).
- `HttpStack`: an HTTP client on the app, Redis to check what it did and the settings it runs
  on, with `call`/`ok` and the writes clients make (accounts, follows, posts, DMs). Each suite
  subclasses it with its own `admin_token` and its own reads and waits.
- `app_running(settings)` and `asgi_client(app)`: the app with its lifespan entered (bounded
  both ways) and an httpx client on it over `httpx.ASGITransport` (no sockets).
- `running_loops(loops, *extra)` and `event_log_worker(settings, group, make_handler)`: real
  consumer loops (`muster.worker.build_loops`) in the test's event loop, stopped (bounded) at
  exit — so a worker that does not stop fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import msgspec
import redis.asyncio as aioredis
from fastapi import FastAPI

from muster import events
from muster.api.app import create_app
from muster.connection import async_client
from muster.consumer import ConsumerLoop, Handler
from muster.settings import Settings
from muster.worker import build_loops, event_log_streams

UNSET: Any = object()
"""`json=` left out (None is a JSON body of its own)."""
LIFESPAN_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0

MakeHandler = Callable[[aioredis.Redis, Settings], Awaitable[Handler]]


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


# --- the HTTP side ------------------------------------------------------------------------------
@dataclass
class HttpStack:
    """The api (an HTTP client on it), Redis to check on it, and the settings it runs on."""

    admin_token: ClassVar[str]
    """The bootstrap admin's token in the suite's settings: the writes below use it."""

    client: httpx.AsyncClient
    redis: aioredis.Redis
    settings: Settings

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = UNSET,
        content: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        all_headers = {**bearer(token), **(headers or {})}
        if json is not UNSET:
            content = msgspec.json.encode(json)
            all_headers.setdefault("Content-Type", "application/json")
        return await self.client.request(
            method, path, content=content, headers=all_headers, params=params
        )

    async def ok(
        self, method: str, path: str, status: int = 200, *, token: str | None = None, **kw: Any
    ) -> Any:
        """The call, asserted to answer `status`; its JSON body (None when empty)."""
        response = await self.call(method, path, token=token, **kw)
        assert response.status_code == status, (method, path, response.text)
        return response.json() if response.content else None

    # --- writes, as clients make them --------------------------------------------------------
    async def person(self, handle: str, role: str = "member", **fields: Any) -> str:
        """A person with `role`, created by the admin; returns their token."""
        body = await self.ok(
            "POST",
            "/v1/accounts",
            201,
            token=self.admin_token,
            json={"handle": handle, "kind": "person", "role": role, **fields},
        )
        token: str = body["token"]
        return token

    async def team(self, handle: str, *posters: str) -> None:
        await self.ok(
            "POST",
            "/v1/accounts",
            201,
            token=self.admin_token,
            json={"handle": handle, "kind": "team"},
        )
        for poster in posters:
            await self.ok(
                "PUT", f"/v1/accounts/{handle}/posters/{poster}", 204, token=self.admin_token
            )

    async def follow(self, token: str, handle: str, **body: Any) -> None:
        await self.ok("PUT", f"/v1/me/follows/{handle}", token=token, json=body)

    async def post(self, token: str, text: str, **fields: Any) -> dict[str, Any]:
        if "as_" in fields:
            fields["as"] = fields.pop("as_")
        body: dict[str, Any] = await self.ok(
            "POST", "/v1/posts", 202, token=token, json={"text": text, **fields}
        )
        return body

    async def dm(self, token: str, to: str, text: str) -> dict[str, Any]:
        body: dict[str, Any] = await self.ok(
            "POST", "/v1/dms", 202, token=token, json={"to": to, "text": text}
        )
        return body


# --- the app ------------------------------------------------------------------------------------
@asynccontextmanager
async def app_running(settings: Settings) -> AsyncIterator[FastAPI]:
    """Build the app, enter its lifespan (admin bootstrap, lag monitor), yield it, shut it down."""
    app = create_app(settings)
    lifespan = app.router.lifespan_context(app)
    async with asyncio.timeout(LIFESPAN_TIMEOUT_S):
        await lifespan.__aenter__()
    try:
        yield app
    finally:
        # A shutdown that hangs fails the test in seconds rather than at pytest's timeout.
        async with asyncio.timeout(LIFESPAN_TIMEOUT_S):
            await lifespan.__aexit__(None, None, None)


@asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


# --- workers in this event loop -----------------------------------------------------------------
@asynccontextmanager
async def running_loops(
    loops: list[ConsumerLoop], *extra: Any, name: str = "a worker"
) -> AsyncIterator[None]:
    """`loops` (and each `extra(stop)`) running until exit; `name` did not stop → AssertionError."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(
        asyncio.gather(*(loop.run(stop) for loop in loops), *(run(stop) for run in extra))
    )
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=STOP_TIMEOUT_S)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise AssertionError(f"{name} did not stop within 10 s") from None


@asynccontextmanager
async def event_log_worker(
    settings: Settings, group: str, make_handler: MakeHandler, *, name: str = "a worker"
) -> AsyncIterator[None]:
    """A worker's real handler (`make_handler`) on the event log's consumer loops for `group`."""
    redis = async_client(settings)
    try:
        handler = await make_handler(redis, settings)
        loops = build_loops(
            redis,
            settings,
            group=group,
            handler=handler,
            streams_for=event_log_streams(group),
            decode=events.decode,
        )
        async with running_loops(loops, name=name):
            yield
    finally:
        await redis.aclose()
