"""Reading the follower graph the timeline worker keeps (keys.followers / external_followers)."""

from __future__ import annotations

import redis.asyncio as aioredis

from muster import keys


async def follower_count(redis: aioredis.Redis, account: str, partitions: int) -> int:
    """Followers of `account`, members and externals, summed over follower partitions."""
    async with redis.pipeline(transaction=False) as pipe:
        for q in range(partitions):
            pipe.hlen(keys.followers(q, account))
            pipe.hlen(keys.external_followers(q, account))
        counts: list[int] = await pipe.execute()
    return sum(counts)
