"""Fixtures for the audit tests: the api with the real timeline and audit workers.

- `audit_settings`: the root `settings` with an admin token, short blocking reads and the
  archive in the test's temp dir.
- `open_system(settings, workers=("timeline", "audit"))`: the app (httpx over ASGITransport)
  and the real workers' handlers on the shared consumer loops (`muster.worker.build_loops`),
  all in this event loop on the suite's redis-server. `await system.settle()` returns once
  every worker group has read and acknowledged every event, and fails on a dead letter.
- `system`: that for `audit_settings`.

Writes go through the HTTP API; reads of Redis and of the archive check what the workers did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from harness import HttpStack, app_running, asgi_client, event_log_worker
from redis.exceptions import ResponseError

from muster import archive, events, keys, streamids
from muster.audit import worker as audit
from muster.connection import text
from muster.events import AnyEvent
from muster.settings import Settings
from muster.timeline import worker as timeline

ADMIN_TOKEN = "adm-Aud1tQ8v3Lk2xR7pN4tZ9wB6cY1mH5jD"
SETTLE_S = 20.0
_WORKERS = {"timeline": timeline, "audit": audit}


# --- waiting ------------------------------------------------------------------------------------
async def group_done(redis: aioredis.Redis, stream: str, group: str) -> bool:
    try:
        info: Any = await redis.xinfo_stream(stream)
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:
        return False
    found = next((g for g in groups if text(g["name"]) == group), None)
    if found is None:
        return False
    delivered = streamids.parse(text(found["last-delivered-id"]))
    return delivered >= streamids.parse(text(info["last-generated-id"])) and not int(
        found["pending"]
    )


async def settle(
    redis: aioredis.Redis, partitions: int, groups: Sequence[str], within: float = SETTLE_S
) -> None:
    deadline = time.monotonic() + within
    while True:
        for p in range(partitions):
            dead: Any = await redis.xrange(keys.dead_letters(p))
            assert not dead, (
                f"dead letters: {[{text(k): text(v) for k, v in f.items() if k != b'e'} for _, f in dead]}"
            )
        done = [
            await group_done(redis, keys.events(p), g) for p in range(partitions) for g in groups
        ]
        if all(done):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"workers {groups} did not catch up within {within}s")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running_workers(settings: Settings, kinds: Sequence[str]) -> AsyncIterator[None]:
    """The real handlers on the real consumer loops; stopped (bounded) at exit."""
    async with contextlib.AsyncExitStack() as running:
        for kind in kinds:
            module = _WORKERS[kind]
            await running.enter_async_context(
                event_log_worker(settings, module.GROUP, module.make_handler)
            )
        yield


# --- the system -----------------------------------------------------------------------------------
@dataclass
class System(HttpStack):
    admin_token = ADMIN_TOKEN

    groups: tuple[str, ...]

    async def home(self, token: str, limit: int = 100) -> list[str]:
        return [
            p["id"] for p in await self.ok("GET", f"/v1/timelines/home?limit={limit}", token=token)
        ]

    async def settle(self, within: float = SETTLE_S) -> None:
        await settle(self.redis, self.settings.partitions, self.groups, within)

    async def log_events(self) -> list[tuple[str, AnyEvent]]:
        """(entry id, event) of every event-log entry, all partitions."""
        found = []
        for p in range(self.settings.partitions):
            entries: Any = await self.redis.xrange(keys.events(p))
            for entry_id, fields in entries:
                found.append((text(entry_id), events.decode(fields[events.STREAM_FIELD])))
        return found


def archived(root: Path) -> list[archive.Record]:
    """Every record of every partition of the archive."""
    return [r for p in archive.partitions_in(root) for r in archive.read_partition(root, p)]


OpenSystem = Callable[..., AbstractAsyncContextManager[System]]
TWILIO_TOKEN = "audit-test-twilio-auth-token-0123456789"
"""Signs the scenario's inbound SMS (a STOP)."""


@pytest.fixture
def audit_settings(settings: Settings, tmp_path: Path) -> Settings:
    return msgspec.structs.replace(
        settings,
        admin_token=ADMIN_TOKEN,
        consumer_block_ms=100,
        archive_dir=tmp_path / "archive",
        twilio_auth_token=TWILIO_TOKEN,
    )


@asynccontextmanager
async def system_on(
    redis: aioredis.Redis, settings: Settings, workers: Sequence[str] = ("timeline", "audit")
) -> AsyncIterator[System]:
    """The app and `workers` on `settings`; `redis` is the client the System checks with."""
    async with (
        app_running(settings) as app,
        running_workers(settings, workers),
        asgi_client(app) as client,
    ):
        system = System(client, redis, settings, tuple(_WORKERS[w].GROUP for w in workers))
        await system.settle()
        yield system


@pytest.fixture
def open_system(aredis: aioredis.Redis) -> OpenSystem:
    def open_(
        settings: Settings, workers: Sequence[str] = ("timeline", "audit")
    ) -> AbstractAsyncContextManager[System]:
        return system_on(aredis, settings, workers)

    return open_


@pytest.fixture
async def system(audit_settings: Settings, open_system: OpenSystem) -> AsyncIterator[System]:
    async with open_system(audit_settings) as opened:
        yield opened
