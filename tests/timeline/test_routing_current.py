"""Delivery routing works from current state, not from a projection another partition's worker
has not caught up with.

The contact points (who is reachable on which channel, on which channels a person takes
DMs) and the follow records are write-side state, changed in the step that appends the
change; routing reads them there. With several partitions, a change the api accepted before
a post or DM is routed counts even when its own partition's worker has not handled it yet.
Each test makes its changes through the HTTP API, then lets the timeline projection handle
only the post or DM (and what it needs), as a worker ahead of the others would.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from harness import app_running, asgi_client

from muster import events, keys
from muster.projections.timeline import Timeline
from muster.records import decode_request
from muster.settings import Settings
from timeline.conftest import ADMIN_TOKEN, Stack

pytestmark = pytest.mark.anyio
PARTITIONS = 4


def apart(*handles: str) -> None:
    """The test is about handles in different partitions: check it is."""
    assert len({keys.partition_of(h, PARTITIONS) for h in handles}) == len(handles)


async def logged(redis: aioredis.Redis, kind: type[Any]) -> list[Any]:
    """The events of one type in the log, every partition, by id."""
    found = []
    for p in range(PARTITIONS):
        entries: Any = await redis.xrange(keys.events(p))
        found += [events.decode(fields[events.STREAM_FIELD]) for _, fields in entries]
    return sorted((e for e in found if isinstance(e, kind)), key=lambda e: int(e.id))


async def requested(redis: aioredis.Redis) -> set[tuple[str, str, str]]:
    """(message id, recipient, channel) of every delivery request."""
    found = set()
    for p in range(PARTITIONS):
        for channel in keys.OFFAPP_CHANNELS:
            entries: Any = await redis.xrange(keys.deliveries(p, channel))
            for _, fields in entries:
                r = decode_request(fields[events.STREAM_FIELD])
                found.add((r.message_id, r.recipient, r.channel))
    return found


@pytest.fixture
def routing_settings(timeline_settings: Settings) -> Settings:
    return msgspec.structs.replace(timeline_settings, partitions=PARTITIONS)


async def test_a_dm_reaches_contact_points_added_before_it_was_sent(
    routing_settings: Settings, aredis: aioredis.Redis
) -> None:
    apart("ann", "bob")
    async with app_running(routing_settings) as app, asgi_client(app) as client:
        s = Stack(client=client, redis=aredis, settings=routing_settings)
        ann, bob = await s.person("ann"), await s.person("bob")
        await s.ok("PATCH", "/v1/me", token=bob, json={"email": "bob@example.test"})
        dm = await s.dm(ann, "bob", "are you safe?")
    # ann's partition is ahead: the DM is routed before bob's changes are projected
    await Timeline(aredis, routing_settings).apply_batch(
        await logged(aredis, events.DirectMessageSent)
    )
    assert await requested(aredis) == {(dm["id"], "bob", "email")}


@pytest.mark.parametrize("change", ["contact point added", "unfollowed"])
async def test_a_post_is_routed_on_the_follows_and_contact_points_as_they_are(
    routing_settings: Settings, aredis: aioredis.Redis, change: str
) -> None:
    """ann follows infra by email (projected). Then, before the post, she either adds the email
    address she had not set (nobody in any partition was reachable off-app until then), or
    unfollows; neither change is projected when the post is routed."""
    apart("ann", "infra")
    async with app_running(routing_settings) as app, asgi_client(app) as client:
        s = Stack(client=client, redis=aredis, settings=routing_settings)
        ann = await s.person(
            "ann", **({} if change == "contact point added" else {"email": "a@x.test"})
        )
        await s.team("infra", "admin")
        await s.follow(ann, "infra", channels=["app", "email"])
        projection = Timeline(aredis, routing_settings)
        for kind in (events.AccountCreated, events.AccountFollowed):  # all projected so far
            await projection.apply_batch(await logged(aredis, kind))
        if change == "contact point added":
            await s.ok("PATCH", "/v1/me", token=ann, json={"email": "ann@example.test"})
        else:
            await s.unfollow(ann, "infra")
        post = await s.post(ADMIN_TOKEN, "the bridge is open", as_="infra")
    await projection.apply_batch(await logged(aredis, events.PostPublished))
    expected = {(post["id"], "ann", "email")} if change == "contact point added" else set()
    assert await requested(aredis) == expected
