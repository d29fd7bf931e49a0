"""Fixtures for the delivery tests: the api, the timeline and delivery workers, real peers.

- `peers`: an HTTP webhook receiver, a Twilio-compatible SMS endpoint and an aiosmtpd SMTP
  server, each on a free loopback port in the test's event loop (peers.py).
- `delivery_settings`: the root `settings` pointed at those peers — SMTP, `twilio` SMS with
  the fake's base URL and login, webhooks to loopback allowed (MUSTER_WEBHOOK_ALLOW_PRIVATE
  on: the happy paths deliver to 127.0.0.1), a 1 s retry schedule.
- `open_stack(settings, resolver=None, delivery=True)`: the app (httpx over ASGITransport),
  the real timeline worker and the real delivery worker (`muster.delivery.worker.Delivery`
  with its retry scheduler) on the shared consumer loops, all in this event loop on the
  suite's redis-server. `stack` is that for `delivery_settings`.

Writes go through the HTTP API only. `await stack.routed()` waits until the timeline worker
handled every event; `await stack.delivered()` until no delivery is left unread, unacked or
waiting in a retry set.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from aiohttp.abc import AbstractResolver
from harness import HttpStack, app_running, asgi_client, event_log_worker, running_loops
from redis.exceptions import ResponseError

from delivery.peers import HttpReceiver, SmtpSink, TwilioFake
from muster import keys
from muster.connection import async_client, text
from muster.delivery import worker as delivery
from muster.records import decode_request
from muster.settings import Settings
from muster.timeline import worker as timeline
from muster.worker import build_loops

ADMIN_TOKEN = "adm-D3l1v3ryQ8v3Lk2xR7pN4tZ9wB6cY1mH"
"""The bootstrap token of `admin` in `delivery_settings`."""
PUBLIC_URL = "http://muster.test"
WAIT_S = 20.0


# --- waiting on the workers -------------------------------------------------------------------
async def group_done(redis: aioredis.Redis, stream: str, group: str) -> bool:
    """`group` has read and acked everything in `stream` (a missing stream counts as done)."""
    try:
        info: Any = await redis.xinfo_stream(stream)
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:
        return True
    found = next((g for g in groups if text(g["name"]) == group), None)
    if found is None:
        return False
    return text(found["last-delivered-id"]) == text(info["last-generated-id"]) and not int(
        found["pending"]
    )


async def entries(redis: aioredis.Redis, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XRANGE - + of a stream (empty when it does not exist)."""
    found: Any = await redis.xrange(stream)
    return list(found or [])


async def hash_field(redis: aioredis.Redis, key: str, field: str) -> str:
    """One hash field as text ("" when absent)."""
    raw: Any = await redis.hget(key, field)
    return raw.decode() if raw is not None else ""


async def dead_letters(redis: aioredis.Redis, partitions: int) -> list[dict[str, str]]:
    found = []
    for p in range(partitions):
        for _, fields in await entries(redis, keys.dead_letters(p)):
            found.append({text(k): text(v) for k, v in fields.items()})
    return found


async def deliveries_idle(redis: aioredis.Redis, partitions: int) -> bool:
    """No request unread, unacknowledged or waiting for a retry — read in one MULTI, so a
    request moving from a retry set to its stream is seen in one place or the other."""
    streams = [s for p in range(partitions) for s in delivery.streams_for(p)]
    delayed = [keys.delivery_retries(p, c) for p in range(partitions) for c in keys.OFFAPP_CHANNELS]
    async with redis.pipeline(transaction=True) as pipe:
        for stream in streams:
            pipe.xinfo_stream(stream)
            pipe.xinfo_groups(stream)
        for key in delayed:
            pipe.zcard(key)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    for i in range(len(streams)):
        info, groups = replies[2 * i], replies[2 * i + 1]
        if isinstance(info, ResponseError):
            continue  # no such stream: nothing was ever requested there
        found = next((g for g in groups if text(g["name"]) == delivery.GROUP), None)
        if found is None or int(found["pending"]):
            return False
        if text(found["last-delivered-id"]) != text(info["last-generated-id"]):
            return False
    return not any(replies[2 * len(streams) :])


async def until(check: Callable[[], Any], what: str, within: float = WAIT_S) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


# --- running workers in this event loop ---------------------------------------------------------
def timeline_worker(settings: Settings) -> AbstractAsyncContextManager[None]:
    return event_log_worker(settings, timeline.GROUP, timeline.make_handler)


@asynccontextmanager
async def delivery_worker(
    settings: Settings, *, resolver: AbstractResolver | None = None
) -> AsyncIterator[delivery.Delivery]:
    """The real delivery handler and its retry scheduler, as `muster worker delivery` runs them."""
    redis = async_client(settings)
    handler = delivery.Delivery(redis, settings, resolver=resolver)
    try:
        loops = build_loops(
            redis,
            settings,
            group=delivery.GROUP,
            handler=handler,
            streams_for=delivery.streams_for,
            decode=delivery.decode,
        )
        async with running_loops(loops, handler.run_beside):
            yield handler
    finally:
        await handler.aclose()
        await redis.aclose()


# --- the stack ----------------------------------------------------------------------------------
@dataclass
class Stack(HttpStack):
    admin_token = ADMIN_TOKEN

    async def account(self, handle: str, kind: str = "person", **fields: Any) -> dict[str, Any]:
        """POST /v1/accounts as admin (role member for people unless given)."""
        if kind == "person":
            fields.setdefault("role", "member")
        body: dict[str, Any] = await self.ok(
            "POST",
            "/v1/accounts",
            201,
            token=ADMIN_TOKEN,
            json={"handle": handle, "kind": kind, **fields},
        )
        return body

    async def follow(self, token: str, handle: str, *channels: str, **body: Any) -> None:
        """PUT /v1/me/follows/{handle} with `channels` (an empty list when none are named)."""
        await super().follow(token, handle, channels=list(channels), **body)

    async def deliveries(self, post_id: str, token: str = ADMIN_TOKEN, **query: Any) -> Any:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return await self.ok(
            "GET", f"/v1/posts/{post_id}/deliveries" + (f"?{params}" if params else ""), token=token
        )

    async def routed(self, within: float = WAIT_S) -> None:
        """The timeline worker has handled every event (so every request is appended)."""

        async def done() -> bool:
            for p in range(self.settings.partitions):
                if not await group_done(self.redis, keys.events(p), timeline.GROUP):
                    return False
            return True

        await until(done, "the timeline worker", within)

    async def delivered(self, within: float = WAIT_S) -> None:
        await self.routed(within)
        await until(
            lambda: deliveries_idle(self.redis, self.settings.partitions),
            "the delivery worker",
            within,
        )

    async def requests(self, channel: str) -> list[tuple[str, str]]:
        """(message id, recipient) of every request appended for `channel`, all partitions."""
        from muster import events

        found = []
        for p in range(self.settings.partitions):
            for _, fields in await entries(self.redis, keys.deliveries(p, channel)):
                request = decode_request(fields[events.STREAM_FIELD])
                found.append((request.message_id, request.recipient))
        return sorted(found)

    async def dead(self) -> list[dict[str, str]]:
        return await dead_letters(self.redis, self.settings.partitions)


OpenStack = Callable[..., AbstractAsyncContextManager[Stack]]


@dataclass
class Peers:
    webhooks: HttpReceiver
    sms: TwilioFake
    smtp: SmtpSink

    def hook(self, handle: str) -> str:
        return f"{self.webhooks.url}/hooks/{handle}"


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    found = Peers(HttpReceiver(), TwilioFake(), SmtpSink())
    try:
        await found.webhooks.start()
        await found.sms.start()
        await found.smtp.start()
        yield found
    finally:
        await found.webhooks.stop()
        await found.sms.stop()
        await found.smtp.stop()


@pytest.fixture
def delivery_settings(settings: Settings, peers: Peers) -> Settings:
    return msgspec.structs.replace(
        settings,
        admin_token=ADMIN_TOKEN,
        consumer_block_ms=100,
        public_url=PUBLIC_URL,
        smtp_url=peers.smtp.url,
        mail_from="alerts@muster.test",
        sms_provider="twilio",
        twilio_base_url=peers.sms.url,
        twilio_account_sid=TwilioFake.SID,
        twilio_auth_token=TwilioFake.TOKEN,
        twilio_from=TwilioFake.FROM,
        webhook_allow_private=True,
        webhook_timeout_s=5,
        delivery_retry_schedule=(1, 1, 1),
    )


@pytest.fixture
def open_stack(aredis: aioredis.Redis) -> OpenStack:
    @asynccontextmanager
    async def open_(
        settings: Settings,
        *,
        resolver: AbstractResolver | None = None,
        delivery: bool = True,
        worker_settings: Settings | None = None,
    ) -> AsyncIterator[Stack]:
        """`worker_settings`: the delivery worker's own (e.g. private targets refused)."""
        async with contextlib.AsyncExitStack() as running:
            app = await running.enter_async_context(app_running(settings))
            await running.enter_async_context(timeline_worker(settings))
            if delivery:
                await running.enter_async_context(
                    delivery_worker(worker_settings or settings, resolver=resolver)
                )
            client = await running.enter_async_context(asgi_client(app))
            stack = Stack(client=client, redis=aredis, settings=settings)
            await stack.routed()
            yield stack

    return open_


@pytest.fixture
async def stack(delivery_settings: Settings, open_stack: OpenStack) -> AsyncIterator[Stack]:
    async with open_stack(delivery_settings) as opened:
        yield opened
