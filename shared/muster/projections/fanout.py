"""Fan-out on write: put a post id into every eligible follower's home timeline.

Followers of an account are kept per follower partition (keys.followers(q, account)), so
each partition's share is fanned out by a script running in that partition's slot. The
script walks the follower hash with HSCAN, FANOUT_BATCH followers per call — each call does
ZADD + trim for its batch server-side, and the loop between calls keeps Redis responsive
to other clients during a 100k-follower post. Inserting an id twice changes nothing, so a
fan-out interrupted anywhere is simply run again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis

from muster import keys, scripts
from muster.events import PostPublished, utcnow
from muster.ids import IdGenerator
from muster.projections.routing import PostRoute, subscriber_args, subscriber_keys

FANOUT_BATCH = 2000


class Walk:
    """One fan-out script walking one follower hash, FANOUT_BATCH followers per call. Its
    first call can ride on a pipeline with other writes (`start`); `finish` continues it
    from the cursor that call returned until the hash is done."""

    __slots__ = ("args", "keys", "page", "script")  # one per post and follower hash: keep small

    def __init__(
        self,
        script: Any,
        keys_: list[str],
        args: Callable[[str], list[Any]],
        page: tuple[int, str, str] | None = None,
    ) -> None:
        self.script = script
        self.keys = keys_
        self.args = args
        self.page = page
        """(partition, followers hash, post id) of a plain walk (no routing): its first page
        can run inside a batch.py buffer of that partition (`Writes.fanout`)."""

    async def start(self, pipe: Any) -> None:
        await self.script(keys=self.keys, args=self.args("0"), client=pipe)

    async def finish(self, reply: Any) -> int:
        """Continue after the first call's `reply`; the calls made."""
        calls = 0
        cursor = reply.decode() if isinstance(reply, bytes) else str(reply)
        while cursor != "0":
            reply = await self.script(keys=self.keys, args=self.args(cursor))
            calls += 1
            cursor = reply.decode() if isinstance(reply, bytes) else str(reply)
        return calls

    async def run(self) -> int:
        return 1 + await self.finish(await self.script(keys=self.keys, args=self.args("0")))


def audience_pieces(event: PostPublished, event_id: str, at: datetime) -> tuple[str, str]:
    """The JSON of a RollCallAudienceRecorded of `event` around its recipients (which
    lua/rollcall_audience.lua writes between them as "a","b")."""
    when = msgspec.json.encode(at).decode().strip('"')
    head = (
        f'{{"type":"RollCallAudienceRecorded","id":"{event_id}","actor":"{event.author}",'
        f'"at":"{when}","v":1,"rollcall":"{event.id}","account":"{event.as_account}",'
        '"recipients":['
    )
    return head, "]}"


def _audience_args(event: PostPublished, q: int, ids: IdGenerator) -> Callable[[str], list[Any]]:
    tail = [event.author, keys.follows_prefix(q), event.as_account]

    def args(cursor: str) -> list[Any]:
        return [cursor, FANOUT_BATCH, *tail, *audience_pieces(event, ids.next(), utcnow())]

    return args


@functools.lru_cache(maxsize=4096)
def _follower_hashes(account: str, partitions: int) -> tuple[tuple[str, str], ...]:
    """(members, externals) follower hash names of `account` in each partition: a post walks
    them all, and the same accounts post again and again (a replay: tens of thousands)."""
    return tuple(
        (keys.followers(q, account), keys.external_followers(q, account)) for q in range(partitions)
    )


class Fanout:
    def __init__(self, redis: aioredis.Redis, *, partitions: int, cap: int) -> None:
        self.redis = redis
        self.partitions = partitions
        self.cap = cap
        self._script = scripts.register(redis, "fanout")
        self._routed = scripts.register(redis, "routed_fanout")
        self._subscribers = scripts.register(redis, "route_subscribers")
        self._audience = scripts.register(redis, "rollcall_audience")

    def audience_walks(self, event: PostPublished, ids: IdGenerator) -> list[Walk]:
        """A roll-call post's audience walks: per partition, the account's followers the
        post reaches (members; externals too when public), as routing sees them — still
        following (their follow record), never the author — recorded in the partition's
        audience set and, in the same script call, in the log (RollCallAudienceRecorded,
        with an id from `ids` per call). Every partition is walked whether or not the
        account is merged at read or anyone there is reachable off-app, so the audience is
        everyone the post is for. Nothing for a post without a roll-call."""
        if event.rollcall is None:
            return []
        found = []
        for q in range(self.partitions):
            sources = [keys.followers(q, event.as_account)]
            if event.visibility == "public":
                sources.append(keys.external_followers(q, event.as_account))
            names = [keys.rollcall_audience(q, event.id), keys.events(q)]
            args = _audience_args(event, q, ids)
            found += [Walk(self._audience, [source, *names], args) for source in sources]
        return found

    def subscriber_walks(self, event: PostPublished) -> list[Walk]:
        """A public post's walks of its account's subscribers, one per partition, FANOUT_BATCH
        subscriptions per call like followers (routing.py). Nothing for other posts: an
        internal post never reaches a subscriber."""
        if event.visibility != "public":
            return []
        args = subscriber_args(event)
        return [
            Walk(
                self._subscribers,
                subscriber_keys(q, event.as_account, event.id),
                lambda cursor: args(cursor, FANOUT_BATCH),
            )
            for q in range(self.partitions)
        ]

    def walks(
        self,
        account: str,
        post_id: str,
        *,
        public: bool,
        route: PostRoute | None = None,
        homes: bool = True,
    ) -> list[Walk]:
        """The script walks that fan one post out: one per follower hash to scan (members,
        and externals when public) in each partition (see `to_followers`)."""
        found = []
        for q, (members, externals) in enumerate(_follower_hashes(account, self.partitions)):
            routed = route is not None and q in route.active
            if not homes and not routed:
                continue
            for source in (members, externals) if public else (members,):
                if routed:
                    assert route is not None
                    found.append(
                        Walk(
                            self._routed, route.keys(q, source), self._routed_args(route, q, homes)
                        )
                    )
                else:
                    found.append(
                        Walk(
                            self._script,
                            [source],
                            self._plain_args(post_id, q),
                            page=(q, source, post_id),
                        )
                    )
        return found

    def _plain_args(self, post_id: str, q: int) -> Callable[[str], list[Any]]:
        def args(cursor: str) -> list[Any]:
            return [cursor, FANOUT_BATCH, keys.home_member(post_id), keys.home_prefix(q), self.cap]

        return args

    def _routed_args(self, route: PostRoute, q: int, homes: bool) -> Callable[[str], list[Any]]:
        def args(cursor: str) -> list[Any]:
            return route.args(cursor, FANOUT_BATCH, q, self.cap, homes)

        return args

    async def to_followers(
        self,
        account: str,
        post_id: str,
        *,
        public: bool,
        route: PostRoute | None = None,
        homes: bool = True,
    ) -> int:
        """Insert into the home of every follower of `account` (externals only when public).

        With a `route`, the same pass also appends the post's delivery requests (routing.py)
        in the partitions where anyone is reachable off-app; `homes=False` routes only (for
        read-merged accounts, which have no fan-out). Partitions without reach, and posts
        without a route, run the plain script: the no-delivery path stays as fast as it was.
        """
        calls = 0
        for walk in self.walks(account, post_id, public=public, route=route, homes=homes):
            calls += await walk.run()
        return calls
