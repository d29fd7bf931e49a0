"""Fixtures for the HTTP API: the app with its lifespan entered, clients, a cast of accounts.

- `api`: the app built from `api_settings` (the root `settings` plus MUSTER_ADMIN_TOKEN), its
  lifespan entered, reached over `httpx.ASGITransport` (no sockets; Starlette's TestClient
  warns with this httpx). `Api` also carries an asyncio Redis client on the same server, to
  read the event log and snapshot the database.
- `open_api(settings)`: the same for other settings, or a second start of the app (restarts).
- `cast`: one account of each kind and role, with their tokens.
- `live_server(settings)`: the app on a real uvicorn on a free loopback port, in a thread, for
  tests that need real HTTP (chunked bodies, schemathesis).

Helpers the tests import: `assert_error` (docs/api.md's one error shape) and `ADMIN_TOKEN`.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest
import redis as sync_redis
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from harness import HttpStack, app_running, asgi_client
from harness import bearer as bearer  # the tests import it from here
from redis_server import free_port

from muster import events, keys
from muster.api.app import create_app
from muster.api.state import ApiState
from muster.connection import text
from muster.enrolments import Enrolments
from muster.events import AnyEvent
from muster.settings import Settings

ADMIN_TOKEN = "adm-Q8v3Lk2xR7pN4tZ9wB6cY1mH5jD0sFgE"  # 35 characters, MUSTER_ADMIN_TOKEN-worthy
"""The bootstrap token of `admin` in `api_settings`."""


def assert_error(
    response: httpx.Response, status: int, code: str | None = None, *, field: str | None = None
) -> dict[str, Any]:
    """docs/api.md: `{"error": {"code", "message", "field"?}}` and nothing else, with `status`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) <= {"code", "message", "field"}, error
    assert re.fullmatch(r"[a-z][a-z0-9_]*", error["code"]), error  # snake_case
    assert isinstance(error["message"], str)
    assert error["message"].strip()
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error
    if status == 429 or status == 503:
        assert int(response.headers["Retry-After"]) >= 1
    return error


@dataclass
class Api(HttpStack):
    """The app under test, an HTTP client on it and a Redis client on its database."""

    admin_token = ADMIN_TOKEN

    app: FastAPI

    @property
    def state(self) -> ApiState:
        current: ApiState = self.app.state.muster
        return current

    async def create(
        self, handle: str, kind: str = "person", *, token: str = ADMIN_TOKEN, **fields: Any
    ) -> dict[str, Any]:
        """POST /v1/accounts as admin; asserts 201 and returns the body (with `token`, if any)."""
        response = await self.call(
            "POST", "/v1/accounts", token=token, json={"handle": handle, "kind": kind, **fields}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def person(self, handle: str, role: str = "member", **fields: Any) -> str:
        """A person with `role`; returns their token."""
        token: str = (await self.create(handle, role=role, **fields))["token"]
        return token

    async def follows(self, handle: str) -> dict[str, str]:
        """The write-side follow records of `handle`: followed handle → "channels|mandatory"."""
        p = keys.partition_of(handle, self.settings.partitions)
        raw: dict[Any, Any] = await self.redis.hgetall(keys.follows(p, handle))
        return {text(k): text(v) for k, v in raw.items()}

    async def events(self) -> list[AnyEvent]:
        """Every event in the log, all partitions, in id (time) order."""
        found: list[AnyEvent] = []
        for p in range(self.settings.partitions):
            found.extend(await self.events_in(p))
        return sorted(found, key=lambda e: int(e.id))

    async def events_in(self, partition: int) -> list[AnyEvent]:
        entries: Any = await self.redis.xrange(keys.events(partition))
        return [events.decode(entry[events.STREAM_FIELD]) for _, entry in entries]

    async def expand(self, enrolment: str) -> None:
        """What the timeline worker does with an enrolment event (no worker runs here):
        one FollowerEnrolled per person it names."""
        found = next(e for e in await self.events() if e.id == enrolment)
        assert isinstance(found, events.MembersEnrolled | events.FollowersEnrolled)
        await Enrolments(self.redis, partitions=self.settings.partitions).expand(found)

    async def log_length(self) -> int:
        total = 0
        for p in range(self.settings.partitions):
            total += int(await self.redis.xlen(keys.events(p)))
        return total

    async def snapshot(self) -> dict[bytes, Any]:
        """Every key of the database and its value: equal snapshots mean nothing was written."""
        return await snapshot(self.redis)


async def snapshot(redis: aioredis.Redis) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    async for key in redis.scan_iter(count=1000):
        kind = text(await redis.type(key))
        value: Any
        if kind == "string":
            value = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "set":
            value = await redis.smembers(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = (await redis.xrange(key), await redis.xinfo_groups(key))
        else:
            value = kind
        out[key] = (kind, value)
    return out


def snapshot_sync(redis: sync_redis.Redis) -> dict[bytes, Any]:
    """`snapshot` for a sync client (tests against a live server in another thread)."""
    out: dict[bytes, Any] = {}
    for key in redis.scan_iter(count=1000):
        kind = text(redis.type(key))
        value: Any
        if kind == "string":
            value = redis.get(key)
        elif kind == "hash":
            value = redis.hgetall(key)
        elif kind == "set":
            value = redis.smembers(key)
        elif kind == "list":
            value = redis.lrange(key, 0, -1)
        elif kind == "zset":
            value = redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = (redis.xrange(key), redis.xinfo_groups(key))
        else:
            value = kind
        out[key] = (kind, value)
    return out


@asynccontextmanager
async def running(settings: Settings, redis: aioredis.Redis) -> AsyncIterator[Api]:
    """Build the app, enter its lifespan (admin bootstrap, lag monitor), yield it, shut it down."""
    async with app_running(settings) as app, asgi_client(app) as client:
        yield Api(app=app, client=client, redis=redis, settings=settings)


OpenApi = Callable[[Settings], AbstractAsyncContextManager[Api]]


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, admin_token=ADMIN_TOKEN)


@pytest.fixture
def open_api(aredis: aioredis.Redis) -> OpenApi:
    """`async with open_api(settings) as api:` — an app on the test's Redis, for other settings."""

    def open_(settings: Settings) -> AbstractAsyncContextManager[Api]:
        return running(settings, aredis)

    return open_


@pytest.fixture
async def api(api_settings: Settings, open_api: OpenApi) -> AsyncIterator[Api]:
    async with open_api(api_settings) as opened:
        yield opened


@dataclass
class Cast:
    """One account of each kind and role. `ops` is a team: it has no token."""

    admin: str
    member: str
    external: str
    service: str
    tokens: dict[str, str] = field(default_factory=dict)

    def by_name(self, name: str) -> str | None:
        """`admin`, `member`, `external`, `service` → token; `team`, `anonymous` → None."""
        return {
            "admin": self.admin,
            "member": self.member,
            "external": self.external,
            "service": self.service,
        }.get(name)


CAST_HANDLES = {"admin": "admin", "member": "mia", "external": "eve", "service": "svc"}
TEAM = "ops"


@pytest.fixture
async def cast(api: Api) -> Cast:
    member = await api.person("mia", "member")
    external = await api.person("eve", "external")
    service = (await api.create("svc", "service"))["token"]
    team = await api.create(TEAM, "team")
    assert "token" not in team
    return Cast(admin=ADMIN_TOKEN, member=member, external=external, service=service)


# --- a live server ----------------------------------------------------------------------------
@dataclass
class LiveServer:
    url: str
    app: FastAPI


@contextmanager
def serve(
    settings: Settings, *, start_timeout: float = 15.0, port: int | None = None
) -> Iterator[LiveServer]:
    """The app on uvicorn (127.0.0.1, `port` or a free one) in a thread; stopped and joined
    on exit."""
    app = create_app(settings)
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited before it started (see its log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn did not start within {start_timeout}s")
            time.sleep(0.02)
        yield LiveServer(url=f"http://127.0.0.1:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=15.0)
        assert not thread.is_alive(), "uvicorn did not stop within 15 s"


@pytest.fixture
def live_server() -> Callable[[Settings], AbstractContextManager[LiveServer]]:
    """`with live_server(settings) as server:` — `server.url` answers real HTTP."""
    return serve
