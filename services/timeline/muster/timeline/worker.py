"""Timeline worker: projects the event log into the follower graph, the post store, account
logs, reply index, home timelines (fan-out on write) and DM conversations, and announces
posts and DMs to the live hub. Every write is keyed by id, so handling an event twice leaves
the same state, and a worker killed at any instant is simply replaced.

It never sends anything outside Redis: off-app delivery belongs to the delivery workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
import structlog

from muster import graph, keys, views
from muster.connection import text, texts
from muster.consumer import Handler, Message
from muster.events import (
    AccountFollowed,
    AccountUnfollowed,
    AnyEvent,
    DirectMessageSent,
    FollowChannelsChanged,
    FollowerEnrolled,
    PostPublished,
)
from muster.ids import id_time_ms
from muster.settings import Settings
from muster.timeline.fanout import Fanout
from muster.timeline.live import Live

GROUP = keys.GROUP_TIMELINE
log = structlog.get_logger("muster.timeline")


def _csv(channels: Sequence[str]) -> str:
    chosen = set(channels) | {"app"}
    return ",".join(c for c in keys.CHANNELS if c in chosen)


class Timeline:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.partitions = settings.partitions
        self.cap = settings.timeline_max
        self.threshold = settings.fanout_on_read_threshold
        self.fanout = Fanout(redis, partitions=self.partitions, cap=self.cap)
        self.live = Live(redis, retention=settings.live_retention)

    async def handle(self, messages: Sequence[Message]) -> None:
        for message in messages:
            await self.apply(message.event)

    async def apply(self, event: AnyEvent) -> None:
        match event:
            case PostPublished():
                await self.post(event)
            case DirectMessageSent():
                await self.direct_message(event)
            case AccountFollowed() | FollowerEnrolled():
                await self.follow(event)
            case FollowChannelsChanged():
                await self.channels_changed(event)
            case AccountUnfollowed():
                await self.unfollow(event)
            case _:
                pass  # accounts, posters, contact points: nothing to project here

    # --- posts ----------------------------------------------------------------------------
    def _log_keys(self, account: str) -> tuple[str, str]:
        p = keys.partition_of(account, self.partitions)
        return keys.account_log(p, account), keys.public_log(p, account)

    async def post(self, event: PostPublished) -> None:
        data = views.encode(views.post_of(event))
        public = event.visibility == "public"
        account_log, public_log = self._log_keys(event.as_account)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.post(keys.partition_of_id(event.id, self.partitions), event.id), data)
            pipe.zadd(account_log, {event.id: 0})
            if public:
                pipe.zadd(public_log, {event.id: 0})
            if event.in_reply_to is not None:
                parent = event.in_reply_to
                pipe.zadd(
                    keys.replies(keys.partition_of_id(parent, self.partitions), parent),
                    {event.id: 0},
                )
            pipe.sismember(keys.BIG_ACCOUNTS, event.as_account)
            *_, big = await pipe.execute()
        await self.fanout.to_home(event.author, [event.id])
        if (
            not big
            and await graph.follower_count(self.redis, event.as_account, self.partitions)
            > self.threshold
        ):
            await self.redis.sadd(keys.BIG_ACCOUNTS, event.as_account)
            log.info("account merged at read from now on", account=event.as_account)
            big = True
        if not big:
            await self.fanout.to_followers(event.as_account, event.id, public=public)
        await self.live.announce(
            event.id,
            {
                "kind": "post",
                "id": event.id,
                "account": event.as_account,
                "author": event.author,
                "visibility": event.visibility,
                "data": data,
            },
        )

    # --- follows ----------------------------------------------------------------------------
    def _follower_hashes(self, follower: str, account: str) -> tuple[str, str]:
        q = keys.partition_of(follower, self.partitions)
        return keys.followers(q, account), keys.external_followers(q, account)

    async def follow(self, event: AccountFollowed | FollowerEnrolled) -> None:
        members, externals = self._follower_hashes(event.follower, event.account)
        target = externals if event.external else members
        channels = list(event.channels)
        if isinstance(event, FollowerEnrolled):  # an enrolment adds to what the person chose
            current = await self.redis.hget(target, event.follower)
            if current is not None:
                channels += text(current).split(",")
        await self.redis.hset(target, event.follower, _csv(channels))
        # Backfill after joining the graph: a post handled concurrently either saw this follower
        # or is already in the log read below (projections converge in any order).
        if not await self.redis.sismember(keys.BIG_ACCOUNTS, event.account):
            account_log, public_log = self._log_keys(event.account)
            source = public_log if event.external else account_log
            recent = await self.redis.zrange(
                source, "+", "-", desc=True, bylex=True, offset=0, num=self.cap
            )
            await self.fanout.to_home(event.follower, texts(recent))
        await self.live.announce(
            event.id, {"kind": "follow", "follower": event.follower, "account": event.account}
        )

    async def channels_changed(self, event: FollowChannelsChanged) -> None:
        members, externals = self._follower_hashes(event.follower, event.account)
        for target in (members, externals):
            if await self.redis.hexists(target, event.follower):
                await self.redis.hset(target, event.follower, _csv(event.channels))

    async def unfollow(self, event: AccountUnfollowed) -> None:
        members, externals = self._follower_hashes(event.follower, event.account)
        account_log, _ = self._log_keys(event.account)
        home = keys.home(keys.partition_of(event.follower, self.partitions), event.follower)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(members, event.follower)
            pipe.hdel(externals, event.follower)
            pipe.zrange(account_log, "+", "-", desc=True, bylex=True, offset=0, num=self.cap)
            *_, recent = await pipe.execute()
        if recent:
            await self.redis.zrem(home, *recent)
        await self.live.announce(
            event.id, {"kind": "unfollow", "follower": event.follower, "account": event.account}
        )

    # --- direct messages --------------------------------------------------------------------
    async def direct_message(self, event: DirectMessageSent) -> None:
        data = views.encode(views.message_of(event))
        sender, recipient = event.actor, event.recipient
        ps = keys.partition_of(sender, self.partitions)
        pr = keys.partition_of(recipient, self.partitions)
        at = id_time_ms(event.id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keys.message(keys.partition_of_id(event.id, self.partitions), event.id), data)
            pipe.zadd(keys.conversation(ps, sender, recipient), {event.id: 0})
            pipe.zadd(keys.conversation(pr, recipient, sender), {event.id: 0})
            pipe.zadd(keys.conversations(ps, sender), {recipient: at}, gt=True)
            pipe.zadd(keys.conversations(pr, recipient), {sender: at}, gt=True)
            await pipe.execute()
        await self.live.announce(
            event.id, {"kind": "dm", "id": event.id, "from": sender, "to": recipient, "data": data}
        )


async def make_handler(redis: aioredis.Redis, settings: Settings) -> Handler:
    return Timeline(redis, settings).handle
