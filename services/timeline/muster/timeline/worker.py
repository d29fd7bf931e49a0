"""The timeline worker: the timeline projection (muster.projections.timeline) on the consumer
loop, as group `timeline` on every partition of the event log. Nothing else lives here:
replay runs the same projection (muster.ops.replay), so it is shared code.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from muster import keys
from muster.consumer import Handler
from muster.projections.timeline import Timeline
from muster.settings import Settings

GROUP = keys.GROUP_TIMELINE


async def make_handler(redis: aioredis.Redis, settings: Settings) -> Handler:
    return Timeline(redis, settings).handle
