"""Audit worker: every event into the archive on disk and into the audit projection.

The handler runs over the shared consumer loop on every partition's event log (and the audit
group's re-drive stream). For a batch it first archives (archiver.py: appended, fsynced and
recorded before it returns, so before the loop acknowledges), then writes the audit index
(projection.py). Both are safe to repeat: an event already archived is not appended again,
and the index is keyed by event id. Beside the loops it trims the event log (trim.py).

It never changes any other projection and never sends anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import redis.asyncio as aioredis

from muster.audit.archiver import Archiver
from muster.consumer import Message
from muster.events import AnyEvent
from muster.keys import GROUP_AUDIT
from muster.projections.audit import AuditIndex
from muster.settings import Settings
from muster.trim import trim_forever

GROUP = GROUP_AUDIT


class AuditWorker:
    """The audit handler (a worker.Service: the trimmer runs beside the loops)."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.archiver = Archiver(redis, settings)
        self.index = AuditIndex(redis, partitions=settings.partitions)

    async def __call__(self, messages: Sequence[Message[AnyEvent]]) -> None:
        await self.archiver.archive(messages)
        await self.index.write([(m.event, m.payload) for m in messages])

    async def run_beside(self, stop: asyncio.Event) -> None:
        await trim_forever(self.redis, self.settings, stop)

    async def aclose(self) -> None:
        """Nothing held open: each append opens, fsyncs and closes its segment."""


async def make_handler(redis: aioredis.Redis, settings: Settings) -> AuditWorker:
    settings.archive_dir.mkdir(parents=True, exist_ok=True)
    return AuditWorker(redis, settings)
