"""Delivery worker entry point: the handler run over the shared consumer loop.

Delivery reads the per-channel delivery streams (keys.deliveries), not the event log.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from muster import keys
from muster.consumer import Handler, Message
from muster.keys import GROUP_DELIVERY
from muster.settings import Settings

GROUP = GROUP_DELIVERY


def streams_for(partition: int) -> list[str]:
    return [keys.deliveries(partition, channel) for channel in keys.OFFAPP_CHANNELS] + [
        keys.retry(partition, GROUP)
    ]


async def make_handler(redis: aioredis.Redis, settings: Settings) -> Handler:
    async def handle(messages: Sequence[Message]) -> None:
        """Consumes and acknowledges; sending arrives with the Delivery issue."""

    return handle
