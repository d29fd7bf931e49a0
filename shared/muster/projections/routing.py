"""Routing: which off-app deliveries a post or a DM asks for, written as delivery requests.

For every post, one request per (recipient, off-app channel) goes to keys.deliveries(q, c) of
the recipient's partition q: a follower gets channel c when they chose it for that follow (or
the post is critical: then every channel they have a contact point for) and they have a
contact point for it (keys.reach) and, for webhooks, theirs has not answered 410 Gone
(keys.webhooks_disabled). The author never gets their own post.

Routing reads the write side's current state, all in the recipient's partition: the follow
record (keys.follows: the person still follows, on these channels), the reach sets and DM
channels (written with the contact points they come from). A follow, unfollow or contact
change accepted before the post's routing runs counts, even when another partition's worker
has not projected it yet. The walk itself goes over the projected followers (keys.followers);
a follow projected after the post's walk routes the post itself (`Router.late_follows`).
Internal posts reach member followers only: the fan-out never scans external followers for
them. A DM reaches its recipient on the channels they chose for DMs (keys.dm_channels).

A follow handled after a newer post's fan-out (another partition's worker was ahead) routes
that post itself, once the follow record is written (`Router.late_follows`).

Each request's status field (keys.delivery_status: "recipient:channel") is created with
HSETNX in the same script call that appends the request, so a fan-out run again after a crash
appends nothing twice and never resets a status the delivery worker has since moved on.
The request JSON is built in Lua by concatenation: handles are [a-z0-9_] and ids are digits,
so nothing needs escaping (tests check it decodes to the same records.DeliveryRequest).

Subscribers without an account (muster.subscriptions) are recipients too, named `sub-<id>`:
every public post (never an internal one) walks each partition's keys.subscribers hash of
its account, FANOUT_BATCH at a time like followers (lua/route_subscribers.lua), and appends
one request per active subscription it is for (a subscription limited to components gets a
post naming one of them, or naming none), with the same HSETNX status and request format,
so the delivery worker, its statuses, the report and the delivery ids work unchanged.

It never sends anything; the delivery workers do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec
import redis.asyncio as aioredis

from muster import events, keys, scripts, views
from muster.events import DirectMessageSent, PostPublished
from muster.records import components_arg

FAMILIES = (keys.Family("deliveries", (lambda p: keys.delivery_status(p, keys.ANY),)),)
"""Delivery statuses: created here with each request, moved on by the delivery workers; not
in the log, so rebuilt only by routing again (`muster replay --redeliver`)."""


ROUTED_FANOUT = scripts.source("routed_fanout")


class LateFollow(NamedTuple):
    """A follow (or enrolment, or channel change) just projected: `log` is where the posts
    it may have missed are (the account's log, or its public log for an external follower).
    The channels come from the follower's current follow record of `account`."""

    q: int
    follower: str
    account: str
    log: str
    since: str  # the follow's event id (an expanded enrolment's: the enrolment's)


def subscriber_keys(q: int, account: str, message_id: str) -> list[str]:
    """The keys of partition q lua/route_subscribers.lua reads and writes, in its order."""
    return [
        keys.subscribers(q, account),
        keys.delivery_status(q, message_id),
        *(keys.deliveries(q, c) for c in keys.OFFAPP_CHANNELS),
    ]


def subscriber_args(event: PostPublished) -> Callable[[str, int], list[str]]:
    """lua/route_subscribers.lua's ARGV for `event`, given a cursor and a page size."""
    head, mid = request_pieces(event.id, "post", event.as_account, event_time(event))
    wanted = components_arg(event.components)

    def args(cursor: str, batch: int) -> list[str]:
        return [cursor, str(batch), head, mid, str(keys.DELIVERY_STATUS_TTL_S), wanted]

    return args


def routing_keys(q: int, message_id: str) -> list[str]:
    """The 8 keys of partition q a routing script reads and writes (in lua/route_one.lua's order)."""
    return [
        *(keys.reach(q, c) for c in keys.OFFAPP_CHANNELS),
        keys.webhooks_disabled(q),
        keys.delivery_status(q, message_id),
        *(keys.deliveries(q, c) for c in keys.OFFAPP_CHANNELS),
    ]


def request_pieces(message_id: str, kind: str, actor: str, at: str) -> tuple[str, str]:
    """`head` and `mid` such that head + f + "." + c + mid + f + '","channel":"' + c + '"}'
    is the JSON of records.DeliveryRequest(id=f"{message_id}.{f}.{c}", recipient=f, channel=c)."""
    head = f'{{"type":"DeliveryRequested","id":"{message_id}.'
    mid = (
        f'","actor":"{actor}","at":"{at}","message_id":"{message_id}","kind":"{kind}","recipient":"'
    )
    return head, mid


def request_json(
    message_id: str, kind: str, actor: str, at: str, recipient: str, channel: str
) -> str:
    """What the scripts append, built the same way in Python (for tests and tools)."""
    head, mid = request_pieces(message_id, kind, actor, at)
    return f'{head}{recipient}.{channel}{mid}{recipient}","channel":"{channel}"}}'


def event_time(event: events.Event) -> str:
    """The event's `at` as msgspec writes it, so a request decodes to the same instant."""
    return events.encode(event).split(b'"at":"', 1)[1].split(b'"', 1)[0].decode()


class PostRoute:
    """One post's routing, handed to Fanout.walks (which runs ROUTED_FANOUT where
    `active` says some follower partition has a contact point at all)."""

    def __init__(self, event: PostPublished, active: set[int]) -> None:
        self.post_id = event.id
        self.account = event.as_account
        self.author = event.author
        self.critical = event.severity == "critical"
        self.active = active
        self.head, self.mid = request_pieces(event.id, "post", event.as_account, event_time(event))

    def keys(self, q: int, source: str) -> list[str]:
        return [source, *routing_keys(q, self.post_id)]

    def args(self, cursor: str, batch: int, q: int, cap: int, homes: bool) -> list[str]:
        return [
            cursor,
            str(batch),
            keys.home_member(self.post_id),
            keys.home_prefix(q),
            str(cap),
            "1" if homes else "0",
            self.author,
            "1" if self.critical else "0",
            self.head,
            self.mid,
            str(keys.DELIVERY_STATUS_TTL_S),
            keys.follows_prefix(q),
            self.account,
        ]


class Router:
    """Routes DMs and late follows, and builds each post's PostRoute; reads the reach sets
    and DM channels the write side keeps."""

    def __init__(self, redis: aioredis.Redis, *, partitions: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self._route_dm = scripts.register(redis, "route_dm")
        self._route_follower = scripts.register(redis, "route_follower")

    async def late_follows(
        self, follows: Sequence[LateFollow], recent: Mapping[str, Sequence[str]]
    ) -> int:
        """Route the posts newer than each follow that its fan-out ran too early to see.

        A post's fan-out routes the followers it finds. A follow handled after a newer post
        (another partition's worker was ahead, or another consumer had the next batch) was not
        among them: its home gets the post by backfill, and this gives it the deliveries. A
        post whose fan-out did see the follower is not routed twice: each request's status is
        created with HSETNX. `recent`: each log's newest posts, read after the follow records
        were written (Timeline.graph_changes). How many requests were appended."""
        pairs = [
            (post_id, follow)
            for follow in follows
            for post_id in recent.get(follow.log, ())
            if int(post_id) > int(follow.since)
        ]
        if not pairs:
            return 0
        ids = list(dict.fromkeys(post_id for post_id, _ in pairs))
        async with self.redis.pipeline(transaction=False) as pipe:
            for post_id in ids:
                pipe.get(keys.post(keys.partition_of_id(post_id, self.partitions), post_id))
            stored = await pipe.execute()
        posts = {
            post_id: msgspec.json.decode(data, type=views.Post)
            for post_id, data in zip(ids, stored, strict=True)
            if data is not None
        }
        async with self.redis.pipeline(transaction=False) as pipe:
            for post_id, follow in pairs:
                post = posts.get(post_id)
                if post is None:
                    continue
                head, mid = request_pieces(post.id, "post", post.as_account, post.created_at)
                await self._route_follower(
                    keys=[
                        keys.follows(follow.q, follow.follower),
                        *routing_keys(follow.q, post.id),
                    ],
                    args=[
                        follow.follower,
                        post.author,
                        "1" if post.severity == "critical" else "0",
                        head,
                        mid,
                        keys.DELIVERY_STATUS_TTL_S,
                        follow.account,
                    ],
                    client=pipe,
                )
            added = await pipe.execute()
        return sum(int(n) for n in added)

    async def active(self) -> set[int]:
        """The partitions where anyone is reachable off-app (routing runs only there)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for q in range(self.partitions):
                for channel in keys.OFFAPP_CHANNELS:
                    pipe.scard(keys.reach(q, channel))
            sizes: Sequence[int] = await pipe.execute()
        n = len(keys.OFFAPP_CHANNELS)
        return {q for q in range(self.partitions) if any(sizes[q * n : (q + 1) * n])}

    @staticmethod
    def post_route(event: PostPublished, active: set[int]) -> PostRoute | None:
        """None when no partition has anyone reachable off-app (`active()`, asked once for
        a run): the plain fan-out runs."""
        return PostRoute(event, active) if active else None

    def _dm_call(self, event: DirectMessageSent) -> tuple[list[str], list[Any]]:
        recipient = event.recipient
        p = keys.partition_of(recipient, self.partitions)
        head, mid = request_pieces(event.id, "dm", event.actor, event_time(event))
        return (
            [keys.dm_channels(p), *routing_keys(p, event.id)],
            [recipient, head, mid, keys.DELIVERY_STATUS_TTL_S],
        )

    async def queue_direct_message(self, pipe: Any, event: DirectMessageSent) -> None:
        """Queue the requests for the recipient's DM channels on `pipe` (none on a re-run)."""
        keys_, args = self._dm_call(event)
        await self._route_dm(keys=keys_, args=args, client=pipe)
