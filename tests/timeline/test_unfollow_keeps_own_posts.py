"""Unfollowing a team keeps the posts one made as that team in one's home, whatever order the
two partitions are handled in (found by the chaos run: tests/chaos).

The docs say a home holds "the caller's own posts (including those made as a team)". An
unfollow took every post of the team's log out of the home, and which ones depended on the
order: a post made *after* the unfollow stayed when the log was applied in order (as `muster
replay` does) and was removed when the unfollower's partition was handled after the team's —
so live homes and a replay's differed. Own posts are now kept (keys.authored).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from harness import app_running, asgi_client, bearer

from muster import events, keys
from muster.connection import text
from muster.projections.timeline import Timeline
from muster.settings import Settings

pytestmark = pytest.mark.anyio

TOKEN = "gap-admin-Zq8Lm3Xv7Rt2Kw9Np4Hs6Jd1Fb5Gc"
PARTITIONS = 3


async def homes_after(
    redis: aioredis.Redis, settings: Settings, log: list[events.AnyEvent]
) -> set[str]:
    """boss's home after the timeline projection applied `log` in that order."""
    for pattern in ("muster:{p*}:home:*", "muster:{p*}:log:*", "muster:{p*}:followers:*"):
        async for key in redis.scan_iter(match=pattern):
            await redis.delete(key)
    timeline = Timeline(redis, settings, route=False, announce=False)
    for event in log:
        await timeline.apply(event)
    home = keys.home(keys.partition_of("boss", PARTITIONS), "boss")
    members: Any = await redis.zrange(home, 0, -1)
    return {keys.home_member(text(m)) for m in members}


async def test_own_posts_as_a_team_stay_in_the_home_whatever_the_order(
    settings: Settings, aredis: aioredis.Redis
) -> None:
    settings = msgspec.structs.replace(settings, partitions=PARTITIONS, admin_token=TOKEN)
    assert keys.partition_of("boss", PARTITIONS) != keys.partition_of("ops", PARTITIONS)
    async with app_running(settings) as app, asgi_client(app) as client:
        admin = bearer(TOKEN)
        created = await client.post(
            "/v1/accounts", headers=admin, json={"handle": "boss", "kind": "person"}
        )
        boss = bearer(created.json()["token"])
        await client.post("/v1/accounts", headers=admin, json={"handle": "ops", "kind": "team"})
        await client.put("/v1/accounts/ops/posters/boss", headers=admin)
        assert (await client.put("/v1/me/follows/ops", headers=boss, json={})).status_code == 200
        before = await client.post("/v1/posts", headers=boss, json={"text": "a", "as": "ops"})
        assert (await client.delete("/v1/me/follows/ops", headers=boss)).status_code == 204
        after = await client.post("/v1/posts", headers=boss, json={"text": "b", "as": "ops"})
    log: list[events.AnyEvent] = []
    for p in range(PARTITIONS):
        entries: Any = await aredis.xrange(keys.events(p))
        for _, fields in entries:
            log.append(events.decode(fields[events.STREAM_FIELD]))
    log.sort(key=lambda e: int(e.id))
    unfollow = next(e for e in log if isinstance(e, events.AccountUnfollowed))
    late = [e for e in log if e is not unfollow] + [unfollow]

    in_order = await homes_after(aredis, settings, log)
    unfollow_late = await homes_after(aredis, settings, late)

    own = {before.json()["id"], after.json()["id"]}
    assert in_order == unfollow_late  # live and replay agree, whatever the order
    assert own <= in_order  # and, per the docs, hold the author's own posts
