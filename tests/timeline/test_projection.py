"""The timeline worker's projection, event by event (`Timeline.apply`), on a real redis-server.

- Idempotency: the consumer loop delivers at least once, so every event may be handled
  twice (a reclaim after a crash, a re-drive). Twice must leave exactly what once leaves:
  one timeline entry, one reply-index entry, one live (keys.LIVE) announcement.
- Follows: following brings the account's recent posts into the follower's home (public ones
  only for an external follower, at most MUSTER_TIMELINE_MAX); unfollowing takes them out.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from muster import events, keys, views
from muster.events import (
    AccountFollowed,
    AccountUnfollowed,
    DirectMessageSent,
    FollowerEnrolled,
    PostPublished,
)
from muster.ids import IdGenerator
from muster.projections.timeline import Timeline
from muster.records import decode_request
from muster.settings import Settings
from muster.writeside import WriteSide
from timeline.conftest import zmembers

pytestmark = pytest.mark.anyio

PARTITIONS = 2
_ids = IdGenerator(node=7)


@pytest.fixture
def projection_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, partitions=PARTITIONS, timeline_max=10)


@pytest.fixture
def timeline(aredis: aioredis.Redis, projection_settings: Settings) -> Timeline:
    return Timeline(aredis, projection_settings)


def post(as_account: str, text: str, *, author: str = "pat", **fields: Any) -> PostPublished:
    return PostPublished(
        id=_ids.next(),
        actor=author,
        at=events.utcnow(),
        author=author,
        as_account=as_account,
        text=text,
        **fields,
    )


_seqs: Counter[tuple[str, str]] = Counter()


def next_seq(follower: str, account: str) -> int:
    """The pair's next change number, as the write side takes it with each append."""
    _seqs[(follower, account)] += 1
    return _seqs[(follower, account)]


def followed(follower: str, account: str, *, external: bool = False) -> AccountFollowed:
    return AccountFollowed(
        id=_ids.next(),
        actor=follower,
        at=events.utcnow(),
        follower=follower,
        account=account,
        external=external,
        seq=next_seq(follower, account),
    )


def unfollowed(follower: str, account: str) -> AccountUnfollowed:
    return AccountUnfollowed(
        id=_ids.next(),
        actor=follower,
        at=events.utcnow(),
        follower=follower,
        account=account,
        seq=next_seq(follower, account),
    )


def p_of(handle: str) -> int:
    return keys.partition_of(handle, PARTITIONS)


async def home(redis: aioredis.Redis, handle: str) -> list[str]:
    """A home timeline, newest first, as stored."""
    return [keys.home_member(m) for m in await zmembers(redis, keys.home(p_of(handle), handle))]


async def live_entries(redis: aioredis.Redis) -> list[dict[str, str]]:
    entries: Any = await redis.xrange(keys.LIVE)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def apply_twice(timeline: Timeline, *batch: events.AnyEvent) -> None:
    """Handle a batch, then all of it again (a redelivery after a crash)."""
    for _ in range(2):
        for event in batch:
            await timeline.apply(event)


# --- idempotency --------------------------------------------------------------------------------
async def test_same_events_twice_leave_one_entry_everywhere(
    timeline: Timeline, aredis: aioredis.Redis
) -> None:
    await apply_twice(timeline, followed("mia", "ops"), followed("eve", "ops", external=True))
    first = post("ops", "public status", visibility="public")
    reply = post("ops", "a reply", in_reply_to=first.id)
    await apply_twice(timeline, first, reply)
    # and once more, interleaved the other way round
    await timeline.apply(reply)
    await timeline.apply(first)

    p_ops = p_of("ops")
    assert await aredis.hgetall(keys.followers(p_of("mia"), "ops")) == {b"mia": b"app"}
    assert await aredis.hgetall(keys.external_followers(p_of("eve"), "ops")) == {b"eve": b"app"}
    assert await home(aredis, "mia") == [reply.id, first.id]
    assert await home(aredis, "eve") == [first.id]  # the reply is internal
    assert await home(aredis, "pat") == [reply.id, first.id]  # the author's own
    assert await zmembers(aredis, keys.account_log(p_ops, "ops")) == [first.id, reply.id]
    assert await aredis.zrange(keys.public_log(p_ops, "ops"), 0, -1) == [first.id.encode()]
    replies = keys.replies(keys.partition_of_id(first.id, PARTITIONS), first.id)
    assert await aredis.zrange(replies, 0, -1) == [reply.id.encode()]
    stored = await aredis.get(keys.post(keys.partition_of_id(first.id, PARTITIONS), first.id))
    assert stored == views.encode(views.post_of(first))

    live = await live_entries(aredis)
    assert [(e["kind"], e.get("id") or e["follower"]) for e in live] == [
        ("follow", "mia"),
        ("follow", "eve"),
        ("post", first.id),
        ("post", reply.id),
    ]


async def test_enrolment_twice_is_one_follow_that_keeps_chosen_channels(
    timeline: Timeline, aredis: aioredis.Redis
) -> None:
    chosen = AccountFollowed(
        id=_ids.next(),
        actor="mia",
        at=events.utcnow(),
        follower="mia",
        account="ops",
        channels=("app", "email"),
    )
    enrolled = FollowerEnrolled(
        id=_ids.next(),
        actor="admin",
        at=events.utcnow(),
        follower="mia",
        account="ops",
        channels=("app", "sms"),
        mandatory=True,
    )
    first = post("ops", "before the enrolment")
    await timeline.apply(first)
    await apply_twice(timeline, chosen, enrolled)
    assert await aredis.hgetall(keys.followers(p_of("mia"), "ops")) == {b"mia": b"app,email,sms"}
    assert await home(aredis, "mia") == [first.id]
    follows = [e for e in await live_entries(aredis) if e["kind"] == "follow"]
    assert len(follows) == 2  # one per event, not per handling


async def test_dm_twice_is_one_message_in_each_conversation(
    timeline: Timeline, aredis: aioredis.Redis
) -> None:
    dm = DirectMessageSent(
        id=_ids.next(), actor="mia", at=events.utcnow(), recipient="eve", text="secret"
    )
    await apply_twice(timeline, dm)
    mine = keys.conversation(p_of("mia"), "mia", "eve")
    theirs = keys.conversation(p_of("eve"), "eve", "mia")
    assert await aredis.zrange(mine, 0, -1) == [dm.id.encode()]
    assert await aredis.zrange(theirs, 0, -1) == [dm.id.encode()]
    assert [e["kind"] for e in await live_entries(aredis)] == ["dm"]
    assert await home(aredis, "mia") == []
    assert await home(aredis, "eve") == []


# --- follows bring posts in; unfollows take them out -------------------------------------------
async def test_follow_backfills_and_unfollow_removes(
    timeline: Timeline, aredis: aioredis.Redis
) -> None:
    ops = [
        post("ops", f"ops #{n}", visibility="public" if n % 3 == 0 else "internal")
        for n in range(6)
    ]
    other = post("infra", "infra #0")
    own = post("mia", "mia's own", author="mia")
    for event in (*ops, other, own):
        await timeline.apply(event)
    newest_first = [e.id for e in reversed(ops)]

    await timeline.apply(followed("mia", "ops"))
    await timeline.apply(followed("mia", "infra"))
    await timeline.apply(followed("eve", "ops", external=True))
    assert await home(aredis, "mia") == sorted([*newest_first, other.id, own.id], reverse=True)
    assert await home(aredis, "eve") == [e.id for e in reversed(ops) if e.visibility == "public"]

    await apply_twice(timeline, unfollowed("mia", "ops"))
    assert await home(aredis, "mia") == [own.id, other.id]  # ops's posts gone, the rest stay
    assert await aredis.hlen(keys.followers(p_of("mia"), "ops")) == 0
    await timeline.apply(unfollowed("eve", "ops"))
    assert await home(aredis, "eve") == []
    assert await aredis.hlen(keys.external_followers(p_of("eve"), "ops")) == 0

    # a post after the unfollow does not come back, a follow again brings all back
    later = post("ops", "after unfollow")
    await timeline.apply(later)
    assert await home(aredis, "mia") == [own.id, other.id]
    await timeline.apply(followed("mia", "ops"))
    assert await home(aredis, "mia") == sorted(
        [later.id, *newest_first, other.id, own.id], reverse=True
    )


async def test_backfill_and_fanout_respect_the_timeline_cap(
    timeline: Timeline, aredis: aioredis.Redis, projection_settings: Settings
) -> None:
    cap = projection_settings.timeline_max
    ops = [post("ops", f"ops #{n}") for n in range(cap + 5)]
    for event in ops:
        await timeline.apply(event)
    await timeline.apply(followed("mia", "ops"))
    assert await home(aredis, "mia") == [e.id for e in reversed(ops)][:cap]
    more = [post("ops", f"more #{n}") for n in range(3)]
    for event in more:
        await timeline.apply(event)
    assert await home(aredis, "mia") == [e.id for e in reversed([*ops, *more])][:cap]
    # the account's own log is not capped
    assert await aredis.zcard(keys.account_log(p_of("ops"), "ops")) == len(ops) + len(more)


@pytest.mark.parametrize("together", [True, False], ids=["one batch", "two batches"])
async def test_an_older_follow_change_never_undoes_a_newer_one(
    timeline: Timeline, aredis: aioredis.Redis, together: bool
) -> None:
    """A follow whose worker died is reclaimed after the person's later unfollow was applied:
    the stale follow must not put them back among the followers."""
    follow = followed("ann", "ops")
    unfollow = unfollowed("ann", "ops")
    await timeline.apply(post("ops", "before"))
    if together:
        await timeline.apply_batch([unfollow, follow])
    else:
        await timeline.apply(unfollow)
        await timeline.apply(follow)
    assert await aredis.hget(keys.followers(p_of("ann"), "ops"), "ann") is None
    assert await home(aredis, "ann") == []
    await timeline.apply(follow)  # and handled again later: still nothing
    assert await aredis.hget(keys.followers(p_of("ann"), "ops"), "ann") is None
    refollow = followed("ann", "ops")  # a new follow after all that counts
    await timeline.apply(refollow)
    assert await aredis.hget(keys.followers(p_of("ann"), "ops"), "ann") is not None


@pytest.mark.parametrize("change", ["follow", "unfollow"])
async def test_a_post_handled_at_the_same_moment_as_a_follow_change_is_never_lost(
    aredis: aioredis.Redis, projection_settings: Settings, change: str
) -> None:
    """Two workers (two partitions, or two consumers of one) handle a post and a follow
    change of its account at the same moment, with every interleaving of their round trips
    the delays below produce: a follow must end with the post in the home, an unfollow
    without it — as if they had been handled one after the other, in either order."""
    first, second = Timeline(aredis, projection_settings), Timeline(aredis, projection_settings)
    wrong = []
    for i in range(48):
        follower = f"racer{i}"  # both partitions, against the account's
        if change == "unfollow":
            await first.apply(followed(follower, "infra"))
        the_post = post("infra", f"update {i}")
        the_change = (
            followed(follower, "infra") if change == "follow" else unfollowed(follower, "infra")
        )
        delay = (i % 8) * 0.0002

        async def later(event: events.AnyEvent, worker: Timeline, seconds: float) -> None:
            await asyncio.sleep(seconds)
            await worker.apply(event)

        await asyncio.gather(
            later(the_post, first, 0.0), later(the_change, second, delay if i % 2 else 0.0)
        )
        if (the_post.id in await home(aredis, follower)) != (change == "follow"):
            wrong.append(follower)
    assert wrong == []


async def accepted(redis: aioredis.Redis, *changes: Any) -> Any:
    """What the api commits with each event it appends: its write-side state (routing reads
    the follow records and contact points there). The last event, to project next."""
    side = WriteSide(redis, partitions=PARTITIONS)
    async with redis.pipeline(transaction=True) as pipe:
        for event in changes:
            await side.apply(pipe, event)
        await pipe.execute()
    return changes[-1]


async def requested(redis: aioredis.Redis, handle: str) -> set[tuple[str, str]]:
    """(post id, channel) of every delivery request routed to `handle`."""
    found = set()
    for channel in keys.OFFAPP_CHANNELS:
        entries: Any = await redis.xrange(keys.deliveries(p_of(handle), channel))
        for _, fields in entries:
            request = decode_request(fields[b"e"])
            if request.recipient == handle:
                found.add((request.message_id, request.channel))
    return found


@pytest.mark.parametrize("change", ["follow", "enrolment", "channels"])
async def test_a_follow_handled_after_a_newer_post_still_gets_its_deliveries(
    aredis: aioredis.Redis, projection_settings: Settings, change: str
) -> None:
    """The post's worker was ahead (another partition, or another consumer had the follow's
    batch): its fan-out ran before the follow was projected, so it routed nobody. The follow,
    handled after, routes the posts newer than itself on the channels it holds — once — and
    not the posts it came after. A channel change is different: the follow was projected,
    so the fan-out finds the follower and routes on the channels the write side holds now."""
    account = "alerts"
    follower = next(h for h in (f"m{i}" for i in range(50)) if p_of(h) != p_of(account))
    ahead, behind = Timeline(aredis, projection_settings), Timeline(aredis, projection_settings)
    await accepted(
        aredis,
        events.AccountCreated(
            id=_ids.next(),
            actor="admin",
            at=events.utcnow(),
            handle=follower,
            account_id=_ids.next(),
            kind="person",
            role="member",
            email=f"{follower}@example.test",
            phone="+15550001111",
        ),
    )
    if change == "channels":  # followed for the app only, then sms added
        await behind.apply(await accepted(aredis, followed(follower, account)))
    older = post(account, "before the follow")
    event: AccountFollowed | FollowerEnrolled | events.FollowChannelsChanged
    fields: dict[str, Any] = dict(
        id=_ids.next(), actor=follower, at=events.utcnow(), follower=follower, account=account
    )
    if change == "follow":
        event = AccountFollowed(**fields, channels=("app", "sms"))
    elif change == "enrolment":
        event = FollowerEnrolled(**fields, channels=("app", "sms"), mandatory=True)
    else:
        event = events.FollowChannelsChanged(**fields, channels=("app", "sms"))
    await accepted(aredis, event)  # the change is accepted; the posts' worker runs first
    newer = post(account, "after the follow")
    alarm = post(account, "evacuate", severity="critical")
    await ahead.apply_batch([older, newer, alarm])
    critical = {(alarm.id, "sms"), (alarm.id, "email")}  # every contact point, whatever chosen
    expected = {(newer.id, "sms"), *critical}
    if change == "channels":  # found by the fan-out, routed on the follow's current channels
        expected.add((older.id, "sms"))
    assert await requested(aredis, follower) == (expected if change == "channels" else set())

    await behind.apply(event)
    assert await requested(aredis, follower) == expected
    await behind.apply(event)  # handled again: nothing more
    await ahead.apply_batch([newer, alarm])  # nor the posts' own fan-out run again
    assert await requested(aredis, follower) == expected
    entries = 0
    for channel in keys.OFFAPP_CHANNELS:
        entries += int(await aredis.xlen(keys.deliveries(p_of(follower), channel)))
    assert entries == len(expected)


async def test_a_v1_follow_change_handled_after_a_v2_one_changes_nothing(
    timeline: Timeline, aredis: aioredis.Redis
) -> None:
    """A change appended before follow changes carried a seq (v1) comes before every v2
    change of the pair in the log; handled after one (reclaimed after an upgrade, or by a
    replay running beside the live workers) it is the older, and must not undo it."""
    stale = AccountUnfollowed(
        id=_ids.next(), actor="ann", at=events.utcnow(), v=1, follower="ann", account="ops"
    )
    await timeline.apply(followed("ann", "ops"))
    await timeline.apply(stale)
    assert await aredis.hget(keys.followers(p_of("ann"), "ops"), "ann") == b"app"
