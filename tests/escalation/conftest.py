"""Fixtures for the escalation tests: the api, the real timeline worker and the real
escalation worker (its handler on the due streams' consumer loops, its timer beside them),
all in the test's event loop on the suite's redis-server, on 4 partitions.

`open_escalation(settings, worker=False)` leaves the escalation worker out (the crash test
runs it as a process of its own). Helpers read what the workers wrote: the log's events of a
type, the delivery requests on every delivery stream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from harness import app_running, asgi_client, running_loops
from timeline.conftest import ADMIN_TOKEN, Stack, timeline_worker

from muster import events, keys
from muster.connection import async_client
from muster.escalation.worker import GROUP, Escalation, decode, streams_for
from muster.records import DeliveryRequest, decode_request
from muster.settings import Settings
from muster.worker import build_loops

PARTITIONS = 4
OPTIONS = [
    {"key": "1", "label": "I'm safe", "kind": "ok"},
    {"key": "2", "label": "I need help", "kind": "help"},
]
WAIT_S = 30.0
"""Bounded waits for rounds due in a few seconds, with room for a busy 2-core machine."""


@pytest.fixture
def escalation_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings, admin_token=ADMIN_TOKEN, consumer_block_ms=100, partitions=PARTITIONS
    )


@asynccontextmanager
async def escalation_worker(settings: Settings) -> AsyncIterator[Escalation]:
    """The real handler on the due streams' loops, and its timer, until exit."""
    redis = async_client(settings)
    try:
        handler = Escalation(redis, settings)
        loops = build_loops(
            redis, settings, group=GROUP, handler=handler, streams_for=streams_for, decode=decode
        )
        async with running_loops(loops, handler.run_beside, name="the escalation worker"):
            yield handler
    finally:
        await redis.aclose()


OpenEscalation = Callable[..., AbstractAsyncContextManager[Stack]]


@pytest.fixture
def open_escalation(aredis: aioredis.Redis) -> OpenEscalation:
    @asynccontextmanager
    async def open_(settings: Settings, *, worker: bool = True) -> AsyncIterator[Stack]:
        async with (
            app_running(settings) as app,
            timeline_worker(settings),
            asgi_client(app) as client,
        ):
            stack = Stack(client=client, redis=aredis, settings=settings)
            await stack.settle()
            if not worker:
                yield stack
                return
            async with escalation_worker(settings):
                yield stack

    return open_


def soon(minutes: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


async def put_policy(stack: Stack, name: str, **body: Any) -> dict[str, Any]:
    found: dict[str, Any] = await stack.ok(
        "PUT", f"/v1/escalation-policies/{name}", token=ADMIN_TOKEN, json=body
    )
    return found


async def set_manager(stack: Stack, handle: str, manager: str | None) -> None:
    await stack.ok("PATCH", f"/v1/accounts/{handle}", token=ADMIN_TOKEN, json={"manager": manager})


async def open_rollcall(stack: Stack, token: str, policy: str | None, **fields: Any) -> str:
    body: dict[str, Any] = {"options": OPTIONS, "deadline": soon(), **fields}
    if policy is not None:
        body["policy"] = policy
    post = await stack.post(token, "Fire alarm in building A: are you safe?", rollcall=body)
    await stack.settle()  # the audience is recorded, the timers armed
    rollcall: str = post["id"]
    return rollcall


async def logged(redis: aioredis.Redis, kind: type[Any], partitions: int = PARTITIONS) -> list[Any]:
    found = []
    for p in range(partitions):
        entries: Any = await redis.xrange(keys.events(p))
        found += [events.decode(fields[events.STREAM_FIELD]) for _, fields in entries]
    return sorted((e for e in found if isinstance(e, kind)), key=lambda e: int(e.id))


async def told(redis: aioredis.Redis, rollcall: str) -> list[tuple[str, str, str]]:
    """(round, subject, target) of every notice of the roll-call's RollCallEscalated events."""
    return [
        (e.round, n.subject, n.target)
        for e in await logged(redis, events.RollCallEscalated)
        if e.rollcall == rollcall
        for n in e.notices
    ]


async def requests(redis: aioredis.Redis, partitions: int = PARTITIONS) -> list[DeliveryRequest]:
    """Every delivery request on every delivery stream, in no particular order."""
    found = []
    for p in range(partitions):
        for channel in keys.OFFAPP_CHANNELS:
            entries: Any = await redis.xrange(keys.deliveries(p, channel))
            found += [decode_request(fields[events.STREAM_FIELD]) for _, fields in entries]
    return found


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, within: float = WAIT_S
) -> None:
    """Poll `check` (bounded) until it holds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.05)


async def rounds_done(redis: aioredis.Redis, partitions: int = PARTITIONS) -> bool:
    """No round waits in a timer set, and the escalation group has handled every due one."""
    for p in range(partitions):
        if await redis.zcard(keys.rollcall_timers(p)):
            return False
        stream = keys.rollcall_due(p)
        if not await redis.exists(stream):
            continue
        info: Any = await redis.xinfo_stream(stream)
        groups: Any = await redis.xinfo_groups(stream)
        group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
        if group is None or group["last-delivered-id"] != info["last-generated-id"]:
            return False
        if int(group["pending"]):
            return False
    return True
