"""Enrolments: one MembersEnrolled or FollowersEnrolled becomes one FollowerEnrolled per person.

The api appends an enrolment as one event and answers at once, whatever the member count;
the timeline worker expands it here, in chunks, each person through lua/enrol.lua with the
enrolment's done set (keys.enrolment_done): a worker killed at any point has its entry
reclaimed and handled again, and an entry handled twice enrols nobody twice — everyone is
enrolled exactly once. For `all_members` the rule was written with the event (it is
write-side state), so when the members are read here, a member created meanwhile is either
among them or found the rule as it was created (the api's writes.create_account), which uses
the same done set. The follows appended here are then projected like any other (routing included).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from muster import keys
from muster.events import FollowerEnrolled, FollowersEnrolled, MembersEnrolled, utcnow
from muster.ids import IdGenerator
from muster.records import rule_of
from muster.writeside import WriteSide

CHUNK = 1000
"""People enrolled per round trip."""

Enrolment = MembersEnrolled | FollowersEnrolled


class Enrolments:
    def __init__(self, redis: aioredis.Redis, *, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self.writeside = WriteSide(redis, partitions=partitions)
        self._ids: IdGenerator | None = None

    async def expand(self, event: Enrolment) -> int:
        """Enrol everyone `event` names who is not enrolled by it yet; how many were now.

        Nothing for an enrolment already expanded, nor for an `all_members` one that a later
        one of the same account replaced (that one enrols everyone as the admin last said),
        nor for a v1 MembersEnrolled (the api of its day enrolled everyone itself)."""
        if isinstance(event, MembersEnrolled) and event.v < 2:
            return 0
        pa = keys.partition_of(event.account, self.partitions)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hexists(keys.enrolments_expanded(pa), event.id)
            pipe.hget(keys.enrolment_rules(pa), event.account)
            expanded, rule = await pipe.execute()
        if expanded:
            return 0
        if isinstance(event, MembersEnrolled):
            if rule is None or rule_of(event.account, rule).enrolment != event.id:
                return 0  # replaced by a later rule, whose own expansion enrols everyone
            people = sorted(await self._members())
            externals: frozenset[str] = frozenset()
        else:
            people = list(event.followers)
            externals = frozenset(event.externals)
        people = [p for p in people if p != event.account]
        ids = await self._generator()
        enrolled = 0
        for start in range(0, len(people), CHUNK):
            chunk = people[start : start + CHUNK]
            done = {keys.partition_of(p, self.partitions) for p in chunk}
            async with self.redis.pipeline(transaction=False) as pipe:
                for person in chunk:
                    q = keys.partition_of(person, self.partitions)
                    follow = FollowerEnrolled(
                        id=ids.next(),
                        actor=event.actor,
                        at=utcnow(),
                        follower=person,
                        account=event.account,
                        channels=event.channels,
                        mandatory=event.mandatory,
                        external=person in externals,
                        enrolment=event.id,
                    )
                    await self.writeside.enrol(pipe, follow, done=keys.enrolment_done(q, event.id))
                for q in done:
                    pipe.expire(keys.enrolment_done(q, event.id), keys.ENROLMENT_DONE_TTL_S)
                replies = await pipe.execute()
            enrolled += sum(1 for seq in replies[: len(chunk)] if int(seq))
        await self.redis.hset(keys.enrolments_expanded(pa), event.id, "1")
        return enrolled

    async def _members(self) -> set[str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for p in range(self.partitions):
                pipe.smembers(keys.members(p))
            replies: list[set[bytes]] = await pipe.execute()
        return {m.decode() for reply in replies for m in reply}

    async def ids(self) -> IdGenerator:
        """The id generator of this worker's appends (its node number taken once)."""
        return await self._generator()

    async def _generator(self) -> IdGenerator:
        """Ids for the follows it appends: a node number of its own, as every id maker."""
        if self._ids is None:
            self._ids = IdGenerator(int(await self.redis.incr(keys.NODE_COUNTER)))
        return self._ids
