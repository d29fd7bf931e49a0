"""The timeline projection: the event log into the follower graph, the post store, account
logs, reply index, home timelines (fan-out on write) and DM conversations, and announces
posts and DMs to the live hub. Every write is keyed by id, so handling an event twice leaves
the same state, and a worker killed at any instant is simply replaced.

A batch is applied in runs (`apply_batch`) of a few round trips each, not one per event;
replay (muster.ops.replay) rebuilds projections with this same code, routing and live
announcements off. It never sends anything outside Redis: off-app delivery belongs to the
delivery workers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import redis.asyncio as aioredis
import structlog
from redis.exceptions import NoScriptError

from muster import eventlog, graph, keys, rounds, views
from muster.connection import texts
from muster.consumer import Message
from muster.enrolments import Enrolments
from muster.events import (
    AccountFollowed,
    AccountUnfollowed,
    AnyEvent,
    DirectMessageSent,
    FollowChannelsChanged,
    FollowerEnrolled,
    FollowersEnrolled,
    MembersEnrolled,
    PostPublished,
)
from muster.ids import id_time_ms
from muster.projections.batch import Reply, WriteBatches, Writes
from muster.projections.fanout import Fanout, Walk
from muster.projections.live import Live
from muster.projections.routing import LateFollow, Router
from muster.records import LiveEntry
from muster.settings import Settings

GraphChange = AccountFollowed | FollowerEnrolled | FollowChannelsChanged | AccountUnfollowed
"""Events that change the follower graph (a `graph_changes` run)."""
GraphEvent = (AccountFollowed, FollowerEnrolled, FollowChannelsChanged, AccountUnfollowed)


def ordering_partition(event: AnyEvent, partitions: int, own: int | None = None) -> int:
    """The partition whose order this projection must apply `event` in, when partitions are
    applied side by side (a parallel replay): a follow change goes with the account followed,
    not the follower, because that account's posts read the followers it writes (the fan-out
    walks them, and their count decides when the account is merged at read: a follow applied
    before or after a post must be so in every run); anything else with its own partition
    (`own`, eventlog.partition_for, when the caller has it already)."""
    if isinstance(event, GraphEvent):
        return keys.partition_of(event.account, partitions)
    return eventlog.partition_for(event, partitions) if own is None else own


log = structlog.get_logger("muster.timeline")

FAMILIES = (
    keys.Family(
        "graph",
        (
            lambda p: keys.followers(p, keys.ANY),
            lambda p: keys.external_followers(p, keys.ANY),
            lambda p: keys.follow_applied(p, keys.ANY),
            lambda p: keys.follow_versions_v1(p, keys.ANY),
        ),
        (keys.BIG_ACCOUNTS,),
    ),
    keys.Family(
        "posts",
        (
            lambda p: keys.post(p, keys.ANY),
            lambda p: keys.account_log(p, keys.ANY),
            lambda p: keys.public_log(p, keys.ANY),
            lambda p: keys.replies(p, keys.ANY),
            lambda p: keys.authored(p, keys.ANY),
        ),
    ),
    keys.Family("timelines", (lambda p: keys.home(p, keys.ANY),)),
    keys.Family(
        "dms",
        (
            lambda p: keys.message(p, keys.ANY),
            lambda p: keys.conversation(p, keys.ANY, keys.ANY),
            lambda p: keys.conversations(p, keys.ANY),
        ),
    ),
)
"""The key families this projection owns (muster.projections.families)."""


def _csv(channels: Sequence[str]) -> str:
    return _csv_of(tuple(channels))


@functools.lru_cache(maxsize=256)
def _csv_of(channels: tuple[str, ...]) -> str:
    """Few distinct channel lists exist; a replay asks for them tens of thousands of times."""
    chosen = set(channels) | {"app"}
    return ",".join(c for c in keys.CHANNELS if c in chosen)


class _HomeChange(NamedTuple):
    """A home to fill from `log` while the follow is in the followers hash `guards[0]`, or
    (`fill` false) to empty of the posts in `log` while it is in neither of `guards`."""

    q: int
    home: str
    log: str
    follower: str
    fill: bool
    guards: tuple[str, ...]


@dataclass
class _GraphPlan:
    writes: Writes
    homes: list[_HomeChange] = field(default_factory=list)
    late: list[LateFollow] = field(default_factory=list)  # may have missed a newer post
    news: list[tuple[str, dict[str, str | bytes]]] = field(default_factory=list)


@dataclass
class _PublishPlan:
    writes: Writes
    marks: list[str] = field(default_factory=list)  # accounts merged at read from now on
    walks: list[Walk] = field(default_factory=list)  # every fan-out, numbered for batch.py
    routed: list[Walk] = field(default_factory=list)  # walks that also route: own script
    dms: list[DirectMessageSent] = field(default_factory=list)  # to route
    news: list[tuple[str, dict[str, str | bytes]]] = field(default_factory=list)
    pages: list[Reply] = field(default_factory=list)  # the buffer calls' replies
    started: list[tuple[Walk, Reply]] = field(default_factory=list)  # routed walks' first
    armed: list[PostPublished] = field(default_factory=list)  # roll-calls to escalate


def _post_news(event: PostPublished, data: bytes) -> dict[str, str | bytes]:
    return LiveEntry(
        kind="post",
        id=event.id,
        account=event.as_account,
        author=event.author,
        visibility=event.visibility,
        data=data,
    ).fields()


def _dm_news(event: DirectMessageSent, data: bytes) -> dict[str, str | bytes]:
    entry = LiveEntry(
        kind="dm", id=event.id, sender=event.actor, recipient=event.recipient, data=data
    )
    return entry.fields()


def _follow_news(
    kind: str, event: AccountFollowed | FollowerEnrolled | AccountUnfollowed
) -> dict[str, str | bytes]:
    return LiveEntry(kind=kind, follower=event.follower, account=event.account).fields()


class Timeline:
    """The projection. `route=False` leaves off-app delivery out (replay, unless the operator
    asks to redeliver); `announce=False` keeps history off the live stream (replay);
    `late_follows=False` (replay) skips routing the posts a follow handled late missed
    (routing.Router.late_follows): a replay applies the log in order, and its account logs
    already hold the future, which the follower may have left or muted since. `expand=False`
    (replay) leaves enrolments alone: the follows they were expanded into are in the log;
    and roll-call audiences, which are in the log too (RollCallAudienceRecorded)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        *,
        route: bool = True,
        announce: bool = True,
        late_follows: bool = True,
        expand: bool = True,
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
        self.enrolments = Enrolments(redis, partitions=self.partitions) if expand else None

    async def handle(self, messages: Sequence[Message[AnyEvent]]) -> None:
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
            elif isinstance(event, MembersEnrolled | FollowersEnrolled):
                this = "enrolment"  # expanded into FollowerEnrolled events, in order
            else:
                continue  # posters, tokens: nothing to project here
            if run and this != kind:
                await self._run(kind, run)
                run = []
            kind = this
            run.append(event)
        if run:
            await self._run(kind, run)
        if self.announce:  # roll-call changes, for live reports (written by the api)
            await self._run("rollcalls", list(batch))

    async def apply(self, event: AnyEvent) -> None:
        await self.apply_batch([event])

    async def _run(self, kind: str | None, run: list[AnyEvent]) -> None:
        for attempt in (1, 2):
            try:
                if kind == "publish":
                    await self.publish(
                        [e for e in run if isinstance(e, PostPublished | DirectMessageSent)]
                    )
                elif kind == "rollcalls":
                    await self.live.announce_rollcalls(run)
                elif kind == "enrolment":
                    for event in run:
                        if self.enrolments and isinstance(
                            event, MembersEnrolled | FollowersEnrolled
                        ):
                            await self.enrolments.expand(event)
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
        """Posts and DMs in order, in a few round trips however long the run: plan, write
        (the store, logs, replies, homes, DM conversations and the first page of each plain
        fan-out as one buffer of writes per partition — batch.py — with routed fan-outs and
        DM routing on the same pipeline), then finish (fan-outs with more followers than
        one page, then live announcements, last, so a client told of a post finds it in its
        home)."""
        plan = await self._publish_plan(run)
        await self._publish_write(plan)
        await self._publish_finish(plan)

    async def _publish_plan(self, run: Sequence[PostPublished | DirectMessageSent]) -> _PublishPlan:
        posts = [e for e in run if isinstance(e, PostPublished)]
        bigs, counts, active = await self._post_context(posts)
        plan = _PublishPlan(self.writes.new())
        for event in run:
            if isinstance(event, DirectMessageSent):
                data = self._dm_writes(plan.writes, event)
                if self.route:
                    plan.dms.append(event)
                if self.announce:
                    plan.news.append((event.id, _dm_news(event, data)))
                continue
            data = self._post_writes(plan.writes, event)
            big = event.as_account in bigs
            if not big and counts.get(event.as_account, 0) > self.threshold:
                bigs.add(event.as_account)
                plan.marks.append(event.as_account)
                log.info("account merged at read from now on", account=event.as_account)
                big = True
            route = self.router.post_route(event, active) if self.route else None
            if not big or route is not None:  # read-merged accounts: deliveries, no homes
                for walk in self.fanout.walks(
                    event.as_account,
                    event.id,
                    public=event.visibility == "public",
                    route=route,
                    homes=not big,
                ):
                    if walk.page is not None:
                        q, source, post_id = walk.page
                        plan.writes.fanout(q, len(plan.walks), source, post_id)
                    else:
                        plan.routed.append(walk)
                    plan.walks.append(walk)
            if self.enrolments is not None:  # a roll-call's audience (never in replay)
                ids = await self.enrolments.ids()
                for walk in self.fanout.audience_walks(event, ids):
                    plan.routed.append(walk)
                    plan.walks.append(walk)
                if event.rollcall is not None and event.rollcall.escalation is not None:
                    plan.armed.append(event)
            if self.route:  # subscribers without an account: public posts only
                for walk in self.fanout.subscriber_walks(event):
                    plan.routed.append(walk)
                    plan.walks.append(walk)
            if self.announce:
                plan.news.append((event.id, _post_news(event, data)))
        return plan

    async def _publish_write(self, plan: _PublishPlan) -> None:
        await plan.writes.write_first(self.redis)  # in a cluster: logs before any fan-out
        async with self.redis.pipeline(transaction=False) as pipe:
            plan.pages = await plan.writes.queue(pipe)
            for account in plan.marks:
                pipe.sadd(keys.BIG_ACCOUNTS, account)
            for walk in plan.routed:
                await walk.start(pipe)
                plan.started.append((walk, self.writes.reply(pipe)))
            for dm in plan.dms:
                await self.router.queue_direct_message(pipe, dm)
            await self.writes.execute(pipe)

    async def _publish_finish(self, plan: _PublishPlan) -> None:
        for index, cursor in Writes.continued(plan.pages):
            await plan.walks[index].finish(cursor)
        for walk, reply in plan.started:
            await walk.finish(reply.value)
        if plan.armed:  # after the audience is recorded: a round fired now finds everyone
            async with self.redis.pipeline(transaction=False) as pipe:
                for event in plan.armed:
                    rounds.arm(pipe, self.partitions, event)
                await pipe.execute()
        if plan.news:
            async with self.redis.pipeline(transaction=False) as pipe:
                for event_id, fields in plan.news:
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
            flags = self.writes.reply(pipe)
            lengths = []  # one call per partition: HLENs of its share
            for q in range(self.partitions):
                names = {a: graph.follower_hashes_in(q, a) for a in accounts}
                every = [name for hashes in names.values() for name in hashes]
                lengths.append((names, await self.writes.hlens(pipe, q, every)))
            await self.writes.execute(pipe)
        bigs = {a for a, flag in zip(accounts, flags.value, strict=True) if flag}
        counts = dict.fromkeys(accounts, 0)
        for names, reply in lengths:
            sizes = iter(reply.value)
            for account, hashes in names.items():
                counts[account] += sum(next(sizes) for _ in hashes)
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
        writes.home(ph, keys.authored(ph, event.author), event.id)  # an unfollow keeps it
        return data

    # --- follows ----------------------------------------------------------------------------
    def _follower_hashes(self, follower: str, account: str) -> tuple[str, str]:
        q = keys.partition_of(follower, self.partitions)
        return keys.followers(q, account), keys.external_followers(q, account)

    async def graph_changes(self, run: Sequence[GraphChange]) -> None:
        """Follows, unfollows, channel changes and contact points, in order, in a few round
        trips however long the run: plan, then write the follow changes, then read the logs
        of the accounts followed or left and fill or empty the homes — and, when routing,
        route the posts newer than a follow that their fan-out ran too early to see.

        Ordered by the log, not by clocks: each change carries its pair's seq (taken with its
        append), and the write compares it with the last applied in the same server-side step
        (batch.py, FC), so an older change handled late — reclaimed, or by another consumer —
        changes nothing. A home is filled only while the follow is there and emptied only
        while it is not (FM, FX), so it ends as the later change says whichever finishes last.

        The records are written before the logs are read: a post's log entry is written
        before its fan-out reads the followers (batch.py), so a post handled at the same
        moment elsewhere either sees the new follow record, or is in the log read after it."""
        plan = await self._graph_plan(run)
        async with self.redis.pipeline(transaction=False) as pipe:
            await plan.writes.queue(pipe)
            await self.writes.execute(pipe)
        await self._graph_finish(plan)

    async def _graph_plan(self, run: Sequence[GraphChange]) -> _GraphPlan:
        """What a graph run writes first (follow changes, reach sets), and what it does after."""
        bigs = await self._merged_at_read(
            [e.account for e in run if not isinstance(e, AccountUnfollowed)]
        )
        plan = _GraphPlan(self.writes.new())
        for event in run:
            q = keys.partition_of(event.follower, self.partitions)
            members, externals = self._follower_hashes(event.follower, event.account)
            account_log, public_log = self._log_keys(event.account)
            home = keys.home(q, event.follower)
            applied = keys.follow_applied(q, event.account)
            if isinstance(event, AccountUnfollowed):
                plan.writes.follow_change(
                    q, applied, event.follower, event.seq, members, externals, "U", ""
                )
                plan.homes.append(
                    _HomeChange(q, home, account_log, event.follower, False, (members, externals))
                )
                if self.announce:
                    plan.news.append((event.id, _follow_news("unfollow", event)))
                continue
            if isinstance(event, FollowChannelsChanged) and event.v < 2:
                # v1 stated the channels only (not whether the follower is external): set
                # them where the follow is; there is no telling which posts it may route
                plan.writes.follow_change(
                    q, applied, event.follower, 0, members, externals, "C", _csv(event.channels)
                )
                continue
            target, other = (externals, members) if event.external else (members, externals)
            source = public_log if event.external else account_log
            kind, channels = "S", event.channels
            if isinstance(event, FollowerEnrolled):
                if event.follow_channels is not None:
                    channels = event.follow_channels
                else:
                    kind = "E"  # v1: add the enrolment's channels to what the person chose
            plan.writes.follow_change(
                q, applied, event.follower, event.seq, target, other, kind, _csv(channels)
            )
            if event.account not in bigs:  # merged at read: nothing to copy
                plan.homes.append(_HomeChange(q, home, source, event.follower, True, (target,)))
            if self.late_follows:
                # an expanded enrolment counts from when it was made, not expanded: the posts
                # after the admin's request are the ones it must not miss
                since = event.id
                if isinstance(event, FollowerEnrolled) and event.enrolment is not None:
                    since = event.enrolment
                plan.late.append(LateFollow(q, event.follower, event.account, source, since))
            if self.announce and not isinstance(event, FollowChannelsChanged):
                plan.news.append((event.id, _follow_news("follow", event)))
        return plan

    async def _graph_finish(self, plan: _GraphPlan) -> None:
        """After the follow changes are written: homes, late routing, live announcements."""
        logs = [change.log for change in plan.homes] + [follow.log for follow in plan.late]
        recent = await self._recent(list(dict.fromkeys(logs))) if logs else {}
        if plan.homes:
            homes = self.writes.new()
            for q, home, log, follower, fill, guards in plan.homes:
                if fill:
                    homes.follow_home(q, guards[0], follower, home, recent[log])
                else:
                    homes.unfollow_home(q, guards, follower, home, recent[log])
            async with self.redis.pipeline(transaction=False) as pipe:
                await homes.queue(pipe)
                await self.writes.execute(pipe)
        if plan.late:
            await self.router.late_follows(plan.late, recent)
        if self.announce and plan.news:
            async with self.redis.pipeline(transaction=False) as pipe:
                for event_id, fields in plan.news:
                    await self.live.announce(event_id, fields, pipe=pipe)
                await self.writes.execute(pipe)

    async def _recent(self, sources: list[str]) -> dict[str, list[str]]:
        """The newest `cap` post ids of each account log, newest first."""
        newest: dict[str, Reply] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for source in sources:
                pipe.zrange(source, "+", "-", desc=True, bylex=True, offset=0, num=self.cap)
                newest[source] = self.writes.reply(pipe)
            await self.writes.execute(pipe)
        return {source: texts(reply.value) for source, reply in newest.items()}

    async def _merged_at_read(self, accounts: list[str]) -> set[str]:
        """Which of `accounts` are merged into homes at read (nothing to backfill)."""
        accounts = list(dict.fromkeys(accounts))
        if not accounts:
            return set()
        flags = await self.redis.smismember(keys.BIG_ACCOUNTS, accounts)
        return {a for a, flag in zip(accounts, flags, strict=True) if flag}

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
