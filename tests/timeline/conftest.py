"""Fixtures for the timeline tests: the api and the real timeline worker, side by side.

- `open_stack(settings)` (settings: usually `timeline_settings` with changes): the app, its
  lifespan entered, reached over `httpx.ASGITransport`, plus the timeline worker's real
  handler (`muster.timeline.worker.make_handler`) on the shared consumer loop
  (`muster.worker.build_loops`), both running in the test's event loop on the suite's
  redis-server. `await stack.settle()` returns once the worker has handled (and acked) every
  event in the log, and fails at once if anything was dead-lettered.
- `open_live_stack(settings)`: the same app on a real uvicorn on a free loopback port (SSE
  needs a real server: ASGITransport does not stream), plus the worker.

Tests write through the HTTP API (a test that writes Redis directly says why); they read
Redis to check what the worker did.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis
import uvicorn
from harness import HttpStack, app_running, asgi_client, event_log_worker
from harness import bearer as bearer  # the tests import it from here
from redis.exceptions import ResponseError
from redis_server import free_port

from muster import keys
from muster.api.app import create_app
from muster.connection import text, texts
from muster.settings import Settings
from muster.timeline.worker import GROUP, make_handler

ADMIN_TOKEN = "adm-T7q2Wm9xK4vB8nZ3cR6yL1pH5jD0sFgE"
"""The bootstrap token of `admin` in `timeline_settings`."""

SETTLE_TIMEOUT_S = 15.0


# --- the worker ---------------------------------------------------------------------------------
async def caught_up(redis: aioredis.Redis, partitions: int) -> bool:
    """True when the timeline group has read and acked everything in every event-log partition."""
    for p in range(partitions):
        stream = keys.events(p)
        try:
            info: Any = await redis.xinfo_stream(stream)
            groups: Any = await redis.xinfo_groups(stream)
        except ResponseError:  # no such key: the worker has not created its group yet
            return False
        group = next((g for g in groups if text(g["name"]) == GROUP), None)
        if group is None:
            return False
        if text(group["last-delivered-id"]) != text(info["last-generated-id"]):
            return False
        if int(group["pending"]) != 0:
            return False
    return True


async def zmembers(redis: aioredis.Redis, key: str) -> list[str]:
    """A sorted set's members, in order, as text."""
    raw: Any = await redis.zrange(key, 0, -1)
    return texts(raw)


async def dead_letters(redis: aioredis.Redis, partitions: int) -> list[dict[str, str]]:
    found = []
    for p in range(partitions):
        entries: Any = await redis.xrange(keys.dead_letters(p))
        for _, fields in entries:
            found.append({text(k): text(v) for k, v in fields.items() if k != b"e"})
    return found


async def settle(redis: aioredis.Redis, partitions: int, within: float = SETTLE_TIMEOUT_S) -> None:
    """Wait (bounded) until the worker caught up; fail at once on a dead letter."""
    deadline = time.monotonic() + within
    while True:
        dead = await dead_letters(redis, partitions)
        assert not dead, f"the timeline worker dead-lettered events: {dead}"
        if await caught_up(redis, partitions):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the timeline worker did not catch up within {within}s")
        await asyncio.sleep(0.01)


def timeline_worker(settings: Settings) -> AbstractAsyncContextManager[None]:
    """The real handler on the real consumer loops, in this event loop; stopped (bounded) at exit."""
    return event_log_worker(settings, GROUP, make_handler, name="the timeline worker")


# --- the api ------------------------------------------------------------------------------------
@dataclass
class Stack(HttpStack):
    """The api (an HTTP client on it), the worker behind it, and Redis to check on both."""

    admin_token = ADMIN_TOKEN

    async def status(self, path: str, token: str | None = None) -> int:
        return (await self.call("GET", path, token=token)).status_code

    async def unfollow(self, token: str, handle: str) -> None:
        await self.ok("DELETE", f"/v1/me/follows/{handle}", 204, token=token)

    # --- reads ---------------------------------------------------------------------------------
    async def ids(self, path: str, token: str | None = None) -> list[str]:
        """The ids of a list read (timeline, log, conversation)."""
        return [item["id"] for item in await self.ok("GET", path, token=token)]

    async def walk(self, path: str, token: str | None = None, *, limit: int) -> list[str]:
        """Every id of a newest-first list, page by page with `before` = the last id seen."""
        seen: list[str] = []
        separator = "&" if "?" in path else "?"
        for _ in range(10_000):
            query = f"limit={limit}" + (f"&before={seen[-1]}" if seen else "")
            page = await self.ids(f"{path}{separator}{query}", token)
            assert len(page) <= limit
            if not page:
                return seen
            seen += page
        raise AssertionError(f"paging {path} never ended")

    async def settle(self, within: float = SETTLE_TIMEOUT_S) -> None:
        await settle(self.redis, self.settings.partitions, within)


OpenStack = Callable[[Settings], AbstractAsyncContextManager[Stack]]


@pytest.fixture
def timeline_settings(settings: Settings) -> Settings:
    """Short blocking reads, so the worker and the live hub stop (and react) quickly."""
    return msgspec.structs.replace(settings, admin_token=ADMIN_TOKEN, consumer_block_ms=100)


@pytest.fixture
def open_stack(aredis: aioredis.Redis) -> OpenStack:
    @asynccontextmanager
    async def open_(settings: Settings) -> AsyncIterator[Stack]:
        async with (
            app_running(settings) as app,
            timeline_worker(settings),
            asgi_client(app) as client,
        ):
            stack = Stack(client=client, redis=aredis, settings=settings)
            await stack.settle()  # groups exist, the admin's creation is projected
            yield stack

    return open_


# --- a real server, for SSE -----------------------------------------------------------------------
@asynccontextmanager
async def _uvicorn(settings: Settings, start_timeout: float = 15.0) -> AsyncIterator[str]:
    """The app on uvicorn (127.0.0.1, a free port) in a thread; its base URL. Stopped at exit."""
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        lifespan="on",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-timeline-tests", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            assert thread.is_alive(), "uvicorn exited before it started"
            assert time.monotonic() < deadline, f"uvicorn did not start within {start_timeout}s"
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 15.0)
        assert not thread.is_alive(), "uvicorn did not stop within 15 s"


@pytest.fixture
def open_live_stack(aredis: aioredis.Redis) -> OpenStack:
    @asynccontextmanager
    async def open_(settings: Settings) -> AsyncIterator[Stack]:
        async with _uvicorn(settings) as url, timeline_worker(settings):
            timeout = httpx.Timeout(10.0)
            async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
                stack = Stack(client=client, redis=aredis, settings=settings)
                await stack.settle()
                yield stack

    return open_
