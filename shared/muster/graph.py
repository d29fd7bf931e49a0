"""Reading the follower graph the timeline worker keeps (keys.followers / external_followers)."""

from __future__ import annotations

import redis.asyncio as aioredis

from muster import keys


def follower_hashes_in(q: int, account: str) -> list[str]:
    """The hashes of partition q holding followers of `account` (members, externals)."""
    return [keys.followers(q, account), keys.external_followers(q, account)]


def follower_hashes(account: str, partitions: int) -> list[str]:
    """The hashes whose HLENs add up to the followers of `account`."""
    return [name for q in range(partitions) for name in follower_hashes_in(q, account)]


async def follower_count(redis: aioredis.Redis, account: str, partitions: int) -> int:
    """Followers of `account`, members and externals, summed over follower partitions."""
    async with redis.pipeline(transaction=False) as pipe:
        for name in follower_hashes(account, partitions):
            pipe.hlen(name)
        counts: list[int] = await pipe.execute()
    return sum(counts)
