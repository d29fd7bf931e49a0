"""Timeline worker entry point: the handler run over the shared consumer loop."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from muster.consumer import Handler, Message
from muster.keys import GROUP_TIMELINE
from muster.settings import Settings

GROUP = GROUP_TIMELINE


async def make_handler(redis: aioredis.Redis, settings: Settings) -> Handler:
    async def handle(messages: Sequence[Message]) -> None:
        """Consumes and acknowledges; projections arrive with the Timelines issue."""

    return handle
