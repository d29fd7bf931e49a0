"""Fan-out on write: put a post id into every eligible follower's home timeline.

Followers of an account are kept per follower partition (keys.followers(q, account)), so
each partition's share is fanned out by a script running in that partition's slot. The
script walks the follower hash with HSCAN, FANOUT_BATCH followers per call — each call does
ZADD + trim for its batch server-side, and the loop between calls keeps Redis responsive
to other clients during a 100k-follower post. Inserting an id twice changes nothing, so a
fan-out interrupted anywhere is simply run again.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from muster import keys

FANOUT_BATCH = 2000

# KEYS: followers hash (one partition)   ARGV: cursor, batch, post id, home prefix, cap
# → next cursor ("0" when done)
_FANOUT = """
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local fields = page[2]
local id, prefix, cap = ARGV[3], ARGV[4], tonumber(ARGV[5])
for i = 1, #fields, 2 do
  local home = prefix .. fields[i]
  redis.call('ZADD', home, 0, id)
  if redis.call('ZCARD', home) > cap then
    redis.call('ZREMRANGEBYRANK', home, 0, -cap - 1)
  end
end
return page[1]
"""


class Fanout:
    def __init__(self, redis: aioredis.Redis, *, partitions: int, cap: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self.cap = cap
        self._script = redis.register_script(_FANOUT)

    async def to_followers(self, account: str, post_id: str, *, public: bool) -> int:
        """Insert into the home of every follower of `account` (externals only when public)."""
        calls = 0
        for q in range(self.partitions):
            sources = [keys.followers(q, account)]
            if public:
                sources.append(keys.external_followers(q, account))
            for source in sources:
                cursor = "0"
                while True:
                    reply = await self._script(
                        keys=[source],
                        args=[cursor, FANOUT_BATCH, post_id, keys.home_prefix(q), self.cap],
                    )
                    calls += 1
                    cursor = reply.decode() if isinstance(reply, bytes) else str(reply)
                    if cursor == "0":
                        break
        return calls

    async def to_home(self, handle: str, post_ids: list[str]) -> None:
        """Insert ids into one home timeline and trim it (own posts, follow backfill)."""
        if not post_ids:
            return
        home = keys.home(keys.partition_of(handle, self.partitions), handle)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(home, dict.fromkeys(post_ids, 0))
            pipe.zremrangebyrank(home, 0, -self.cap - 1)
            await pipe.execute()
