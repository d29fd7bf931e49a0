"""The escalation worker: fires roll-call escalation rounds when they fall due.

Beside the consumer loops, a ticker moves due rounds from each partition's timer set
(keys.rollcall_timers: armed by the timeline worker for a roll-call's steps, by the api for a
remind) onto that partition's due stream (keys.rollcall_due), atomically (lua/retry_due.lua,
the delayed-set pattern the delivery retries use). The loops, group `escalation`, read the
due streams and fire each round (muster.escalation.firing). A worker that dies mid-round
leaves its entry pending; it is reclaimed after MUSTER_CLAIM_IDLE_MS and fired again, which
tells nobody twice. Several workers share the group like any other kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from muster import keys, scripts
from muster.consumer import Handler, Message, Outcomes, Retry
from muster.escalation.firing import Firer
from muster.records import EscalationDue, decode_due
from muster.settings import Settings

GROUP = keys.GROUP_ESCALATION
TICK_S = 0.25
MOVE_BATCH = 100
log = structlog.get_logger("muster.escalation")


def streams_for(partition: int) -> list[str]:
    return [keys.rollcall_due(partition), keys.retry(partition, GROUP)]


decode = decode_due
"""What the due streams hold (the consumer loop decodes each entry with it)."""


class Escalation:
    """The handler (`await escalation(messages)`), with the timer ticker beside the loops."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.partitions = settings.partitions
        self.firer = Firer(redis, settings)
        self._move = scripts.register(redis, "retry_due")

    async def __call__(self, messages: Sequence[Message[EscalationDue]]) -> Outcomes:
        outcomes: dict[str, Retry] = {}
        for message in messages:
            try:
                await self.firer.fire(message.event)
            except (RedisError, OSError) as exc:
                log.warning("escalation round failed", round=message.event.member(), error=str(exc))
                outcomes[message.entry_id] = Retry(str(exc))
        return outcomes

    async def tick(self) -> int:
        """Move every due round onto its due stream; how many moved."""
        moved = 0
        for p in range(self.partitions):
            while True:
                n = int(
                    await self._move(
                        keys=[keys.rollcall_timers(p), keys.rollcall_due(p)],
                        args=[int(time.time() * 1000), MOVE_BATCH],
                    )
                )
                moved += n
                if n < MOVE_BATCH:
                    break
        return moved

    async def run_beside(self, stop: asyncio.Event) -> None:
        """Tick until stop; a lost Redis is waited out (the loops log it), never fatal."""
        while not stop.is_set():
            try:
                moved = await self.tick()
                if moved:
                    log.info("escalation rounds due", moved=moved)
            except (RedisError, OSError) as exc:
                log.warning("escalation timer could not reach redis", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=TICK_S)

    async def aclose(self) -> None:
        return None


async def make_handler(redis: aioredis.Redis, settings: Settings) -> Handler:
    return Escalation(redis, settings)
