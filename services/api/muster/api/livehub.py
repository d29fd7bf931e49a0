"""The live hub: one reader of keys.LIVE per api process, fanning entries out to its SSE
connections in memory, so 200 connected streams cost one blocking XREAD, not 200.

Each connection filters for its viewer (routes/stream.py). A connection that cannot keep up
is closed rather than buffered without bound; its client resumes with Last-Event-ID.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from muster import keys
from muster.connection import text
from muster.records import LiveEntry, live_entry_of
from muster.tasks import cancel_and_wait

log = structlog.get_logger("muster.api.live")

Entry = tuple[str, LiveEntry]
QUEUE_MAX = 10_000


def entry_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class Subscription:
    queue: asyncio.Queue[Entry] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    overflowed: bool = False


class StreamTail(ABC):
    """One reader per api process that follows a Redis stream from its newest entry on,
    handing each entry to `_handle`; a Redis error is logged and retried with backoff
    (0.1 s doubling to 5 s), never raised. The live hub and the roll-call hub are two."""

    stream: str
    what = "stream tail"

    def __init__(self, redis: aioredis.Redis, *, block_ms: int) -> None:
        self.redis = redis
        self.block_ms = block_ms
        self.position = "0-0"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        newest: Any = await self.redis.xrevrange(self.stream, "+", "-", count=1)
        self.position = text(newest[0][0]) if newest else "0-0"
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    @abstractmethod
    def _handle(self, entry_id: str, fields: Any) -> None:
        """One entry of the stream, in order (must not block: the reader waits for it)."""

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                reply: Any = await self.redis.xread(
                    {self.stream: self.position}, block=self.block_ms, count=1000
                )
                delay = 0.1
            except RedisError as exc:
                log.warning(f"{self.what} cannot read; retrying", error=str(exc))
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)
                continue
            for _, entries in reply or ():
                for raw_id, fields in entries:
                    self.position = text(raw_id)
                    self._handle(self.position, fields)


class LiveHub(StreamTail):
    stream = keys.LIVE
    what = "live hub"

    def __init__(self, redis: aioredis.Redis, *, block_ms: int) -> None:
        super().__init__(redis, block_ms=block_ms)
        self.subscriptions: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    def _handle(self, entry_id: str, fields: Any) -> None:
        self._publish((entry_id, live_entry_of(fields)))

    def _publish(self, entry: Entry) -> None:
        for subscription in list(self.subscriptions):
            if subscription.overflowed:
                continue
            try:
                subscription.queue.put_nowait(entry)
            except asyncio.QueueFull:
                subscription.overflowed = True
