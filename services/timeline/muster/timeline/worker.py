"""Timeline worker: projects the event log into the follower graph, the post store, account
logs, reply index, home timelines (fan-out on write) and DM conversations, and announces
posts and DMs to the live hub. Every write is keyed by id, so handling an event twice leaves
the same state, and a worker killed at any instant is simply replaced.

A batch is applied in runs (`apply_batch`) of a few round trips each, not one per event;
replay (muster.audit.replay) rebuilds projections with this same code, routing and live
announcements off. It never sends anything outside Redis: off-app delivery belongs to the
delivery workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
import structlog
from redis.exceptions import NoScriptError

from muster import graph, keys, views
from muster.connection import text, texts
from muster.consumer import Handler, Message
from muster.events import (
    AccountCreated,
    AccountFollowed,
    AccountUnfollowed,
    AnyEvent,
    ContactPointsChanged,
    DirectMessageSent,
    FollowChannelsChanged,
    FollowerEnrolled,
    PostPublished,
)
from muster.ids import id_time_ms
from muster.settings import Settings
from muster.timeline.batch import WriteBatches, Writes
from muster.timeline.fanout import Fanout, Walk
from muster.timeline.live import Live
from muster.timeline.routing import LateFollow, Router

GROUP = keys.GROUP_TIMELINE
GraphChange = (
    AccountFollowed
    | FollowerEnrolled
    | FollowChannelsChanged
    | AccountUnfollowed
    | AccountCreated
    | ContactPointsChanged
)
"""Events that change the follower graph or reachability (a `graph_changes` run)."""
GraphEvent = (
    AccountFollowed,
    FollowerEnrolled,
    FollowChannelsChanged,
    AccountUnfollowed,
    AccountCreated,
    ContactPointsChanged,
)
log = structlog.get_logger("muster.timeline")


def _csv(channels: Sequence[str]) -> str:
    chosen = set(channels) | {"app"}
    return ",".join(c for c in keys.CHANNELS if c in chosen)


class Timeline:
    """The projection. `route=False` leaves off-app delivery out (replay, unless the operator
    asks to redeliver); `announce=False` keeps history off the live stream (replay);
    `late_follows=False` (replay) skips routing the posts a follow handled late missed
    (routing.Router.late_follows): a replay applies the log in order, and its account logs
    already hold the future, which the follower may have left or muted since."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        route: bool = True,
        announce: bool = True,
        late_follows: bool = True,
    ) -> None:
        self.redis = redis
        self.partitions = settings.partitions
        self.cap = settings.timeline_max
        self.threshold = settings.fanout_on_read_threshold
        self.route = route
        self.late_follows = route and late_follows
        self.announce = announce
        self.fanout = Fanout(redis, partitions=self.partitions, cap=self.cap)
        self.live = Live(redis, retention=settings.live_retention)
        self.router = Router(redis, partitions=self.partitions)
        self.writes = WriteBatches(redis, cap=self.cap)

    async def handle(self, messages: Sequence[Message]) -> None:
        await self.apply_batch([message.event for message in messages])

    async def apply_batch(self, batch: Sequence[AnyEvent]) -> None:
        """Apply events in order, exactly as one by one. Consecutive posts and DMs form a
        run (`publish`), consecutive follow and account changes another (`graph_changes`):
        each run costs a few round trips however long it is, because nothing in a run
        reads what the run writes except what the run itself keeps track of."""
        run: list[AnyEvent] = []
        kind: str | None = None
        for event in batch:
            if isinstance(event, PostPublished | DirectMessageSent):
                this = "publish"
            elif isinstance(event, GraphEvent):
                this = "graph"
            else:
                continue  # posters, tokens, enrolment rules: nothing to project here
            if run and this != kind:
                await self._run(kind, run)
                run = []
            kind = this
            run.append(event)
        if run:
            await self._run(kind, run)

    async def apply(self, event: AnyEvent) -> None:
        await self.apply_batch([event])

    async def _run(self, kind: str | None, run: list[AnyEvent]) -> None:
        for attempt in (1, 2):
            try:
                if kind == "publish":
                    await self.publish(
                        [e for e in run if isinstance(e, PostPublished | DirectMessageSent)]
                    )
                else:
                    await self.graph_changes([e for e in run if isinstance(e, GraphEvent)])
                return
            except NoScriptError:  # Redis lost its scripts (restarted): load them, run again
                if attempt == 2:
                    raise

    # --- posts ----------------------------------------------------------------------------
    def _log_keys(self, account: str) -> tuple[str, str]:
        p = keys.partition_of(account, self.partitions)
        return keys.account_log(p, account), keys.public_log(p, account)

    async def publish(self, run: Sequence[PostPublished | DirectMessageSent]) -> None:
        """Posts and DMs in order, in a few round trips: the store, logs, replies, homes,
        DM conversations and the first page of each plain fan-out as one buffer of writes
        per partition (batch.py); routed fan-outs and DM routing on the same pipeline; a
        fan-out with more followers than one page is finished after. Live announcements go
        last, so a client told of a post finds it in its home."""
        posts = [e for e in run if isinstance(e, PostPublished)]
        bigs, counts, active = await self._post_context(posts)
        writes = self.writes.new()
        marks: list[str] = []  # accounts found to need merging at read from now on
        walks: list[Walk] = []
        routed: list[Walk] = []  # walks that route deliveries: their own script
        routed_dms: list[DirectMessageSent] = []
        news: list[tuple[str, dict[str, str | bytes]]] = []
        for event in run:
            if isinstance(event, PostPublished):
                data = self._post_writes(writes, event)
                big = event.as_account in bigs
                if not big and counts.get(event.as_account, 0) > self.threshold:
                    bigs.add(event.as_account)
                    marks.append(event.as_account)
                    log.info("account merged at read from now on", account=event.as_account)
                    big = True
                public = event.visibility == "public"
                route = await self.router.post_route(event, active) if self.route else None
                found: list[Walk] = []
                if not big:
                    found = self.fanout.walks(
                        event.as_account, event.id, public=public, route=route
                    )
                elif route is not None:  # no fan-out for read-merged accounts, but deliveries
                    found = self.fanout.walks(
                        event.as_account, event.id, public=public, route=route, homes=False
                    )
                for walk in found:
                    if walk.page is not None:
                        q, source, post_id = walk.page
                        writes.fanout(q, len(walks), source, post_id)
                    else:
                        routed.append(walk)
                    walks.append(walk)
                if not self.announce:
                    continue
                news.append(
                    (
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
                )
            else:
                data = self._dm_writes(writes, event)
                if self.route:
                    routed_dms.append(event)
                if not self.announce:
                    continue
                news.append(
                    (
                        event.id,
                        {
                            "kind": "dm",
                            "id": event.id,
                            "from": event.actor,
                            "to": event.recipient,
                            "data": data,
                        },
                    )
                )
        async with self.redis.pipeline(transaction=False) as pipe:
            calls = await writes.queue(pipe)
            for account in marks:
                pipe.sadd(keys.BIG_ACCOUNTS, account)
            for walk in routed:
                await walk.start(pipe)
            for dm in routed_dms:
                await self.router.queue_direct_message(pipe, dm)
            replies = await self.writes.execute(pipe)
        for index, cursor in writes.continued(replies[:calls]):
            await walks[index].finish(cursor)
        first = calls + len(marks)
        for walk, reply in zip(routed, replies[first : first + len(routed)], strict=True):
            await walk.finish(reply)
        if self.announce and news:
            async with self.redis.pipeline(transaction=False) as pipe:
                for event_id, fields in news:
                    await self.live.announce(event_id, fields, pipe=pipe)
                await self.writes.execute(pipe)

    async def _post_context(
        self, posts: Sequence[PostPublished]
    ) -> tuple[set[str], dict[str, int], set[int]]:
        """Read-merged accounts among the posters, their follower counts, and the partitions
        where anyone is reachable off-app — read once for the whole run (nothing in a run
        changes them)."""
        if not posts:
            return set(), {}, set()
        accounts = list(dict.fromkeys(e.as_account for e in posts))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smismember(keys.BIG_ACCOUNTS, accounts)
            for q in range(self.partitions):  # one call per partition: HLENs of its share
                names = [n for a in accounts for n in graph.follower_hashes_in(q, a)]
                await self.writes.hlens(pipe, q, names)
            flags, *per_partition = await self.writes.execute(pipe)
        bigs = {a for a, flag in zip(accounts, flags, strict=True) if flag}
        per_account = len(graph.follower_hashes_in(0, accounts[0]))
        counts = dict.fromkeys(accounts, 0)
        for lengths in per_partition:
            for i, a in enumerate(accounts):
                counts[a] += sum(lengths[i * per_account : (i + 1) * per_account])
        active = await self.router.active() if self.route else set()
        return bigs, counts, active

    def _post_writes(self, writes: Writes, event: PostPublished) -> bytes:
        """The post's own writes: store, logs, reply index, the author's home. Its JSON."""
        data = views.encode(views.post_of(event))
        pp = keys.partition_of_id(event.id, self.partitions)
        writes.set(pp, keys.post(pp, event.id), data)
        pa = keys.partition_of(event.as_account, self.partitions)
        account_log, public_log = self._log_keys(event.as_account)
        writes.zadd(pa, account_log, event.id)
        if event.visibility == "public":
            writes.zadd(pa, public_log, event.id)
        if event.in_reply_to is not None:
            parent = event.in_reply_to
            pr = keys.partition_of_id(parent, self.partitions)
            writes.zadd(pr, keys.replies(pr, parent), event.id)
        ph = keys.partition_of(event.author, self.partitions)
        writes.home(ph, keys.home(ph, event.author), event.id)
        return data

    # --- follows ----------------------------------------------------------------------------
    def _follower_hashes(self, follower: str, account: str) -> tuple[str, str]:
        q = keys.partition_of(follower, self.partitions)
        return keys.followers(q, account), keys.external_followers(q, account)

    async def graph_changes(self, run: Sequence[GraphChange]) -> None:
        """Follows, unfollows, channel changes and contact points, in order, in four round
        trips: the current follow records and which followed accounts are merged at read are
        read for the whole run (its own records are tracked as it goes); the follow records
        are written; only then are the newest posts of the accounts followed or left read,
        and the homes filled or emptied from them — and, when routing, the posts newer than
        a follow that their fan-out ran too early to see are routed to it (routing.py).

        That order is what keeps a post handled at the same moment by another worker (another
        partition, or another consumer) from being lost or left behind: a post's log entry is
        written before its fan-out reads the followers (batch.py), so it either sees the new
        follow record, or is already in the log this run reads after writing the record."""
        bigs, current, versions = await self._graph_context(run)
        writes = self.writes.new()
        home_changes: list[tuple[int, str, str, bool]] = []  # (q, home, log, True: fill)
        late: list[LateFollow] = []  # follows that may have missed a newer post's routing
        news: list[tuple[str, dict[str, str | bytes]]] = []
        for event in run:
            if isinstance(event, AccountCreated | ContactPointsChanged):
                self.router.contact_writes(writes, event)
                continue
            q = keys.partition_of(event.follower, self.partitions)
            pair = (event.follower, event.account)
            applied = versions.get(pair)
            if applied is not None and int(event.id) < int(applied):
                # A reclaimed older change (a follow whose worker died) arriving after a
                # newer one: applying it would undo what the person did since.
                log.info("older follow change skipped", event_id=event.id, applied=applied)
                continue
            versions[pair] = event.id
            writes.hset(q, keys.follow_versions(q, event.account), event.follower, event.id)
            members, externals = self._follower_hashes(event.follower, event.account)
            home = keys.home(q, event.follower)
            if isinstance(event, AccountFollowed | FollowerEnrolled):
                target = externals if event.external else members
                channels = list(event.channels)
                mine = current.get((target, event.follower))
                if isinstance(event, FollowerEnrolled) and mine is not None:
                    channels += mine.split(",")  # an enrolment adds to what the person chose
                current[(target, event.follower)] = chosen = _csv(channels)
                writes.hset(q, target, event.follower, chosen)
                source = self._backfill_source(event)
                if event.account not in bigs:  # merged at read: nothing to copy
                    home_changes.append((q, home, source, True))
                if self.late_follows:
                    late.append(LateFollow(q, event.follower, target, source, event.id))
                news.append(
                    (
                        event.id,
                        {"kind": "follow", "follower": event.follower, "account": event.account},
                    )
                )
            elif isinstance(event, FollowChannelsChanged):
                account_log, public_log = self._log_keys(event.account)
                for target, posts in ((members, account_log), (externals, public_log)):
                    if current.get((target, event.follower)) is not None:
                        current[(target, event.follower)] = chosen = _csv(event.channels)
                        writes.hset(q, target, event.follower, chosen)
                        if self.late_follows:  # newer posts may have gone out without them
                            late.append(LateFollow(q, event.follower, target, posts, event.id))
            else:
                for target in (members, externals):
                    current[(target, event.follower)] = None
                    writes.hdel(q, target, event.follower)
                home_changes.append((q, home, self._log_keys(event.account)[0], False))
                news.append(
                    (
                        event.id,
                        {"kind": "unfollow", "follower": event.follower, "account": event.account},
                    )
                )
        async with self.redis.pipeline(transaction=False) as pipe:
            await writes.queue(pipe)
            await self.writes.execute(pipe)
        logs = [log for _, _, log, _ in home_changes] + [follow.log for follow in late]
        recent = await self._recent(list(dict.fromkeys(logs))) if logs else {}
        if home_changes:
            homes = self.writes.new()
            for q, home, source, fill in home_changes:
                if fill:
                    homes.homes(q, home, recent[source])
                else:
                    homes.unhome(q, home, recent[source])
            async with self.redis.pipeline(transaction=False) as pipe:
                await homes.queue(pipe)
                await self.writes.execute(pipe)
        if late:
            await self.router.late_follows(late, recent)
        if self.announce and news:
            async with self.redis.pipeline(transaction=False) as pipe:
                for event_id, fields in news:
                    await self.live.announce(event_id, fields, pipe=pipe)
                await self.writes.execute(pipe)

    async def _recent(self, sources: list[str]) -> dict[str, list[str]]:
        """The newest `cap` post ids of each account log, newest first."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for source in sources:
                pipe.zrange(source, "+", "-", desc=True, bylex=True, offset=0, num=self.cap)
            replies = await pipe.execute()
        return {source: texts(ids) for source, ids in zip(sources, replies, strict=True)}

    def _backfill_source(self, event: AccountFollowed | FollowerEnrolled) -> str:
        """External followers get the account's public posts only."""
        account_log, public_log = self._log_keys(event.account)
        return public_log if event.external else account_log

    async def _graph_context(
        self, run: Sequence[GraphChange]
    ) -> tuple[set[str], dict[tuple[str, str], str | None], dict[tuple[str, str], str]]:
        """For a graph run: followed accounts merged at read, current follow records that
        matter, and the last follow change applied for each (follower, account) in it."""
        accounts: list[str] = []
        fields: list[tuple[str, str]] = []
        pairs: list[tuple[str, str]] = []
        for event in run:
            if isinstance(event, AccountCreated | ContactPointsChanged):
                continue
            pairs.append((event.follower, event.account))
            members, externals = self._follower_hashes(event.follower, event.account)
            if isinstance(event, AccountFollowed | FollowerEnrolled):
                accounts.append(event.account)
                fields.append((externals if event.external else members, event.follower))
            elif isinstance(event, FollowChannelsChanged):
                fields += [(members, event.follower), (externals, event.follower)]
        accounts = list(dict.fromkeys(accounts))
        fields = list(dict.fromkeys(fields))
        pairs = list(dict.fromkeys(pairs))
        if not (accounts or fields or pairs):
            return set(), {}, {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for follower, account in pairs:
                q = keys.partition_of(follower, self.partitions)
                pipe.hget(keys.follow_versions(q, account), follower)
            if accounts:
                pipe.smismember(keys.BIG_ACCOUNTS, accounts)
            for name, field in fields:
                pipe.hget(name, field)
            replies = await self.writes.execute(pipe)
        applied = {
            pair: text(value)
            for pair, value in zip(pairs, replies[: len(pairs)], strict=True)
            if value is not None
        }
        replies = replies[len(pairs) :]
        flags = replies.pop(0) if accounts else []
        bigs = {a for a, flag in zip(accounts, flags, strict=True) if flag}
        current = {
            pair: None if value is None else text(value)
            for pair, value in zip(fields, replies, strict=True)
        }
        return bigs, current, applied

    # --- direct messages --------------------------------------------------------------------
    def _dm_writes(self, writes: Writes, event: DirectMessageSent) -> bytes:
        """The DM's store and both halves of the conversation. Its JSON."""
        data = views.encode(views.message_of(event))
        sender, recipient = event.actor, event.recipient
        ps = keys.partition_of(sender, self.partitions)
        pr = keys.partition_of(recipient, self.partitions)
        at = id_time_ms(event.id)
        pm = keys.partition_of_id(event.id, self.partitions)
        writes.set(pm, keys.message(pm, event.id), data)
        writes.zadd(ps, keys.conversation(ps, sender, recipient), event.id)
        writes.zadd(pr, keys.conversation(pr, recipient, sender), event.id)
        writes.zadd_gt(ps, keys.conversations(ps, sender), recipient, at)
        writes.zadd_gt(pr, keys.conversations(pr, recipient), sender, at)
        return data


async def make_handler(redis: aioredis.Redis, settings: Settings) -> Handler:
    return Timeline(redis, settings).handle
