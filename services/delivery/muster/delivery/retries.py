"""Retries without blocking a worker: a delayed set per (partition, channel), and its mover.

A transient failure puts the request, its `attempt` raised, into keys.delivery_retries(q, c)
scored by when it is due: MUSTER_DELIVERY_RETRY_SCHEDULE[k - 1] seconds (k = sends in this
schedule so far) times a jitter of 0.8..1.2, so receivers that failed together are not all
retried in the same second. The schedule exhausted, the request fails for good and goes to
the dead-letter stream; a redrive starts a new schedule.

Every delivery worker process runs `Scheduler.run`: each tick a script moves due requests
back into keys.deliveries(q, c) and removes them from the set in one atomic step, so several
workers can tick at once and each request is moved exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from muster import keys, scripts
from muster.records import DeliveryRequest, encode_request

log = structlog.get_logger("muster.delivery.retries")

TICK_S = 0.2
MOVE_BATCH = 500


def next_delay_s(request: DeliveryRequest, schedule: Sequence[int]) -> float | None:
    """Seconds until the next send after this request's send failed; None when exhausted."""
    made = request.attempt + 1 - request.schedule_from  # sends in this schedule, this one included
    if made > len(schedule):
        return None
    return schedule[made - 1] * random.uniform(0.8, 1.2)


def retry_payload(request: DeliveryRequest) -> bytes:
    """The request to send next: one more attempt recorded. The same bytes for the same
    (request, attempt), so scheduling it twice leaves one member in the set."""
    return encode_request(
        DeliveryRequest(
            id=request.id,
            actor=request.actor,
            at=request.at,
            message_id=request.message_id,
            kind=request.kind,
            recipient=request.recipient,
            channel=request.channel,
            attempt=request.attempt + 1,
            schedule_from=request.schedule_from,
        )
    )


def now_ms() -> float:
    return time.time() * 1000


class Scheduler:
    def __init__(self, redis: aioredis.Redis, *, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self._move = scripts.register(redis, "retry_due")

    async def tick(self) -> int:
        """Move every due request back to its delivery stream; how many moved."""
        moved = 0
        for q in range(self.partitions):
            for channel in keys.OFFAPP_CHANNELS:
                while True:
                    n = int(
                        await self._move(
                            keys=[keys.delivery_retries(q, channel), keys.deliveries(q, channel)],
                            args=[int(now_ms()), MOVE_BATCH],
                        )
                    )
                    moved += n
                    if n < MOVE_BATCH:
                        break
        return moved

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until stop; a lost Redis is waited out (the loops log it), never fatal."""
        while not stop.is_set():
            try:
                moved = await self.tick()
                if moved:
                    log.info("retries due", moved=moved)
            except (RedisError, OSError) as exc:
                log.warning("retry scheduler could not reach redis", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=TICK_S)
