"""Follow changes are applied in the order of the log, never of the clocks that minted ids.

Each change of a (follower, account) pair carries a seq the write side takes as it appends
the change; the timeline worker compares it with the last one applied, and writes, in one
server-side step. The cases below broke when the worker compared event ids (API clocks) and
read the last applied change in one round trip and wrote in another:
- a follow and an unfollow made in the same millisecond through two API processes: the
  unfollow's id was the smaller, so the worker took it for the older and skipped it;
- two consumers of one partition, one holding a follow and the other the newer unfollow,
  both reading "nothing applied yet" before either wrote;
- a channel change racing the follow it changes, the same way.
The changes here are made through the HTTP API, as clients make them; the worker's handling
is driven by hand where the test needs one interleaving of two consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from harness import app_running, asgi_client

from muster import events, keys
from muster.connection import async_client
from muster.projections.timeline import Timeline
from muster.settings import Settings
from timeline.conftest import ADMIN_TOKEN, OpenStack, Stack, zmembers

pytestmark = pytest.mark.anyio


def follow_events(stream_entries: list[Any]) -> list[events.AnyEvent]:
    """The follow changes among a stream's entries, in log order."""
    found = [events.decode(fields[events.STREAM_FIELD]) for _, fields in stream_entries]
    changes = (
        events.AccountFollowed,
        events.AccountUnfollowed,
        events.FollowChannelsChanged,
        events.FollowerEnrolled,
    )
    return [e for e in found if isinstance(e, changes)]


async def followers_of(redis: aioredis.Redis, settings: Settings, account: str) -> dict[str, str]:
    q = keys.partition_of("ann", settings.partitions)
    raw: dict[Any, Any] = await redis.hgetall(keys.followers(q, account))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def home_of(redis: aioredis.Redis, settings: Settings, handle: str) -> list[str]:
    q = keys.partition_of(handle, settings.partitions)
    return [keys.home_member(m) for m in await zmembers(redis, keys.home(q, handle))]


class _Frozen:
    """What muster.ids reads of the time module, stopped at one instant."""

    @staticmethod
    def time_ns() -> int:
        return 1_800_000_000_000_000_000

    @staticmethod
    def sleep(seconds: float) -> None:
        raise AssertionError("more than 64 ids in the frozen millisecond")


@contextlib.contextmanager
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every id minted inside is of one and the same millisecond."""
    with monkeypatch.context() as patch:
        patch.setattr("muster.ids.time", _Frozen)
        yield


async def test_a_follow_and_unfollow_in_one_millisecond_through_two_apis_apply_in_log_order(
    timeline_settings: Settings,
    open_stack: OpenStack,
    aredis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The follow goes through the api process with the higher node number, the unfollow,
    a moment later, through the other: in one millisecond the unfollow's id is the smaller."""
    async with open_stack(timeline_settings) as s, app_running(timeline_settings) as second:
        ann = await s.person("ann")
        await s.team("ops", "admin")
        async with asgi_client(second) as other_client:
            other = Stack(client=other_client, redis=aredis, settings=timeline_settings)
            with frozen_clock(monkeypatch):  # `second` started last: its node is the higher
                await other.follow(ann, "ops")
                await s.unfollow(ann, "ops")
        q = keys.partition_of("ann", timeline_settings.partitions)
        logged: Any = await aredis.xrange(keys.events(q))
        follow, unfollow = follow_events(logged)
        assert isinstance(follow, events.AccountFollowed)
        assert isinstance(unfollow, events.AccountUnfollowed)
        assert int(unfollow.id) < int(follow.id)  # the case: the clocks say the opposite

        await s.settle()
        assert await followers_of(aredis, timeline_settings, "ops") == {}
        post = await s.post(ADMIN_TOKEN, "ann left before this", as_="ops")
        await s.settle()
        assert post["id"] not in await home_of(aredis, timeline_settings, "ann")


async def held_before_its_write(
    timeline: Timeline, batch: list[events.AnyEvent], other: Callable[[], Awaitable[None]]
) -> None:
    """`timeline` handles `batch`, but stops just before its first write to Redis (after it
    read whatever it reads first) while `other` runs to its end; then it carries on."""
    reached, resume = asyncio.Event(), asyncio.Event()
    execute = timeline.writes.execute

    async def paused(pipe: Any) -> None:
        writes = any(args[0] in {"EVALSHA", "EVAL"} for args, _ in pipe.command_stack)
        if writes and not reached.is_set():
            reached.set()
            await resume.wait()
        await execute(pipe)

    timeline.writes.execute = paused  # type: ignore[method-assign]
    handling = asyncio.create_task(timeline.apply_batch(batch))
    async with asyncio.timeout(10):
        await reached.wait()
    await other()
    resume.set()
    async with asyncio.timeout(10):
        await handling


@pytest.mark.parametrize("change", ["unfollow", "channels"])
async def test_two_consumers_holding_a_change_and_a_newer_one_end_as_the_newer_says(
    timeline_settings: Settings, aredis: aioredis.Redis, change: str
) -> None:
    """Consumer 1 holds ann's follow of ops and reads, consumer 2 holds her next change —
    an unfollow, or sms added to the follow — and applies it in full; then consumer 1
    writes. The graph and her home end as her latest change says."""
    settings = msgspec.structs.replace(timeline_settings, partitions=1)
    async with app_running(settings) as app, asgi_client(app) as client:
        s = Stack(client=client, redis=aredis, settings=settings)
        ann = await s.person("ann", phone="+15550001234")
        await s.team("ops", "admin")
        before = await s.post(ADMIN_TOKEN, "posted before ann followed", as_="ops")
        await s.follow(ann, "ops")
        if change == "unfollow":
            await s.unfollow(ann, "ops")
        else:
            await s.follow(ann, "ops", channels=["app", "sms"])
        entries: Any = await aredis.xrange(keys.events(0))
    follow, newer = follow_events(entries)
    found = [events.decode(fields[events.STREAM_FIELD]) for _, fields in entries]
    earlier = [e for e in found if e.id not in {follow.id, newer.id}]

    async with async_client(settings) as one, async_client(settings) as two:
        first, second = Timeline(one, settings), Timeline(two, settings)
        await first.apply_batch(earlier)  # the accounts, the post: handled before
        await held_before_its_write(first, [follow], lambda: second.apply_batch([newer]))

    home = await home_of(aredis, settings, "ann")
    if change == "unfollow":
        assert await followers_of(aredis, settings, "ops") == {}
        assert before["id"] not in home
    else:
        assert await followers_of(aredis, settings, "ops") == {"ann": "app,sms"}
        assert home == [before["id"]]
