"""Routing: the delivery requests the timeline worker appends, checked before anything is sent.

One request per (recipient, off-app channel): the channels the follower chose, if they have
that contact point; every contact point for a critical post; never to the author; internal
posts to members and admins only; DMs on the recipient's `dm_channels`; a webhook that
answered 410 no more. Handling an event again appends nothing; a read-merged (big) account
is still routed. The delivery worker is not running here: the streams hold what was routed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

from delivery.conftest import ADMIN_TOKEN, OpenStack, Stack, entries
from muster import events, keys
from muster.consumer import Message
from muster.projections.routing import event_time, request_json
from muster.records import DeliveryRequest, decode_request
from muster.settings import Settings
from muster.timeline import worker as timeline

pytestmark = pytest.mark.anyio

HOOK = "https://hooks.example.com/muster"


@pytest.fixture
async def routing(delivery_settings: Settings, open_stack: OpenStack) -> AsyncIterator[Stack]:
    """The api and the timeline worker; no delivery worker (and so no DNS look-ups)."""
    async with open_stack(delivery_settings, delivery=False) as opened:
        yield opened


async def routed(s: Stack) -> dict[str, list[tuple[str, str]]]:
    await s.routed()
    return {c: await s.requests(c) for c in keys.OFFAPP_CHANNELS}


@pytest.mark.parametrize("partitions", [1, 3])
async def test_requests_follow_channels_contact_points_severity_and_visibility(
    delivery_settings: Settings, open_stack: OpenStack, partitions: int
) -> None:
    settings = msgspec.structs.replace(
        delivery_settings, partitions=partitions, webhook_allow_private=False
    )
    async with open_stack(settings, delivery=False) as s:
        pat = (await s.account("pat", email="pat@example.test"))["token"]
        await s.account("ops", "team")
        await s.ok("PUT", "/v1/accounts/ops/posters/pat", 204, token=ADMIN_TOKEN)
        everything = {"email": "x@example.test", "phone": "+15551230000", "webhook_url": HOOK}
        people = {
            "mia": await s.account("mia", **everything),  # chose email only
            "tom": await s.account("tom", email="tom@example.test"),  # chose sms: no phone
            "ann": await s.account("ann", **everything),  # chose all three
            "bob": await s.account("bob", **everything),  # app only
            "eve": await s.account("eve", role="external", **everything),  # external, webhook
            "kim": await s.account("kim"),  # chose everything, has no contact point
        }
        await s.follow(people["mia"]["token"], "ops", "email")
        await s.follow(people["tom"]["token"], "ops", "sms")
        await s.follow(people["ann"]["token"], "ops", "email", "sms", "webhook")
        await s.follow(people["bob"]["token"], "ops")
        await s.follow(people["eve"]["token"], "ops", "webhook")
        await s.follow(people["kim"]["token"], "ops", "email", "sms", "webhook")
        await s.follow(pat, "ops", "email")  # the author follows the account they post as

        internal = (await s.post(pat, "internal notice", as_="ops"))["id"]
        public = (await s.post(pat, "public notice", as_="ops", visibility="public"))["id"]
        critical = (await s.post(pat, "evacuate", as_="ops", severity="critical"))["id"]
        got = await routed(s)

        assert got["email"] == sorted(
            [
                (internal, "mia"), (internal, "ann"),
                (public, "mia"), (public, "ann"),
                (critical, "mia"), (critical, "tom"), (critical, "ann"), (critical, "bob"),
            ]
        )  # fmt: skip
        assert got["sms"] == sorted(
            [
                (internal, "ann"), (public, "ann"),
                (critical, "mia"), (critical, "ann"), (critical, "bob"),
            ]
        )  # fmt: skip
        assert got["webhook"] == sorted(
            [
                (internal, "ann"),
                (public, "ann"), (public, "eve"),
                (critical, "mia"), (critical, "ann"), (critical, "bob"),
            ]
        )  # fmt: skip

        # every request has a pending status in its recipient's partition, with its id
        for channel, found in got.items():
            for message_id, recipient in found:
                q = keys.partition_of(recipient, partitions)
                raw = await s.redis.hget(
                    keys.delivery_status(q, message_id), f"{recipient}:{channel}"
                )
                assert raw == b"pending|0|"
                assert await s.redis.ttl(keys.delivery_status(q, message_id)) > 0

        # contact points removed: no more requests for them
        await s.ok(
            "PATCH",
            "/v1/me",
            token=people["ann"]["token"],
            json={"webhook_url": None, "phone": None},
        )
        later = (await s.post(pat, "later", as_="ops"))["id"]
        got = await routed(s)
        assert [r for r in got["email"] if r[0] == later] == [(later, "ann"), (later, "mia")]
        assert [r for r in got["sms"] if r[0] == later] == []
        assert [r for r in got["webhook"] if r[0] == later] == []


async def test_requests_decode_to_the_event_the_python_side_builds(routing: Stack) -> None:
    """The Lua script concatenates JSON; it must decode to exactly the DeliveryRequested."""
    s = routing
    author = (await s.account("pat"))["token"]
    reader = await s.account("mia", webhook_url=HOOK)
    await s.follow(reader["token"], "pat", "webhook")
    await s.redis.sadd(keys.webhooks_disabled(0), "nobody")  # a non-empty set changes nothing
    post = await s.post(author, "hello", visibility="public")
    await s.routed()
    found = await entries(s.redis, keys.deliveries(0, "webhook"))
    (raw,) = [fields[events.STREAM_FIELD] for _, fields in found]
    request = decode_request(raw)
    assert request == DeliveryRequest(
        id=f"{post['id']}.mia.webhook",
        actor="pat",
        at=request.at,
        message_id=post["id"],
        kind="post",
        recipient="mia",
        channel="webhook",
    )
    published = next(
        e
        for e in [
            events.decode(f[events.STREAM_FIELD]) for _, f in await entries(s.redis, keys.events(0))
        ]
        if isinstance(e, events.PostPublished)
    )
    assert request.at == published.at
    assert raw.decode() == request_json(
        post["id"], "post", "pat", event_time(published), "mia", "webhook"
    )


async def test_handling_a_post_again_appends_nothing_and_keeps_statuses(
    delivery_settings: Settings, open_stack: OpenStack
) -> None:
    async with open_stack(delivery_settings, delivery=False) as s:
        author = (await s.account("pat"))["token"]
        for name in ("mia", "tom"):
            reader = await s.account(name, email=f"{name}@example.test", webhook_url=HOOK)
            await s.follow(reader["token"], "pat", "email", "webhook")
        post = await s.post(author, "once")
        before = await routed(s)
        assert len(before["email"]) == len(before["webhook"]) == 2
        status = keys.delivery_status(0, post["id"])
        await s.redis.hset(status, "mia:email", "sent|1|")  # the delivery worker moved on

        published = [
            events.decode(f[events.STREAM_FIELD]) for _, f in await entries(s.redis, keys.events(0))
        ]
        handler = await timeline.make_handler(s.redis, s.settings)
        again = next(e for e in published if isinstance(e, events.PostPublished))
        await handler([Message(keys.events(0), "0-1", again, 2)])  # redelivered after a crash
        assert await routed(s) == before
        assert await s.redis.hget(status, "mia:email") == b"sent|1|"


async def test_dms_go_to_the_recipients_dm_channels(routing: Stack) -> None:
    s = routing
    mia = (await s.account("mia"))["token"]
    tom = await s.account("tom", email="tom@example.test", phone="+15551230001", webhook_url=HOOK)
    ann = await s.account("ann", email="ann@example.test", webhook_url=HOOK)
    await s.ok(
        "PATCH", "/v1/me", token=ann["token"], json={"dm_channels": ["app", "webhook", "sms"]}
    )
    d1 = await s.dm(mia, "tom", "default channels: app and email")
    d2 = await s.dm(mia, "ann", "ann chose webhook and sms; she has no phone")
    d3 = await s.dm(tom["token"], "mia", "mia has no contact point")
    got = await routed(s)
    assert got == {
        "email": [(d1["id"], "tom")],
        "sms": [],
        "webhook": [(d2["id"], "ann")],
    }
    assert d3["id"] not in {m for found in got.values() for m, _ in found}
    raw = (await entries(s.redis, keys.deliveries(0, "webhook")))[0][1][events.STREAM_FIELD]
    request = decode_request(raw)
    assert (request.kind, request.actor) == ("dm", "mia")


async def test_a_disabled_webhook_is_not_routed_until_its_url_changes(routing: Stack) -> None:
    s = routing
    author = (await s.account("pat"))["token"]
    mia = await s.account("mia", webhook_url=HOOK)
    await s.follow(mia["token"], "pat", "webhook")
    await s.redis.sadd(keys.webhooks_disabled(0), "mia")  # as the delivery worker does on 410
    first = await s.post(author, "not to mia's webhook")
    assert await routed(s) == {"email": [], "sms": [], "webhook": []}
    await s.ok("PATCH", "/v1/me", token=mia["token"], json={"webhook_url": HOOK + "/v2"})
    second = await s.post(author, "to her new webhook")
    assert (await routed(s))["webhook"] == [(second["id"], "mia")]
    assert first["id"] != second["id"]


async def test_a_read_merged_account_is_still_routed(
    delivery_settings: Settings, open_stack: OpenStack
) -> None:
    settings = msgspec.structs.replace(delivery_settings, fanout_on_read_threshold=2)
    async with open_stack(settings, delivery=False) as s:
        author = (await s.account("pat"))["token"]
        for name in ("mia", "tom", "ann"):
            reader = await s.account(name, email=f"{name}@example.test")
            await s.follow(reader["token"], "pat", "email")
        await s.post(author, "warm-up: marks pat as big")
        await s.routed()
        assert await s.redis.sismember(keys.BIG_ACCOUNTS, "pat")
        post = await s.post(author, "no fan-out, still emailed")
        got = await routed(s)
        assert [r for r in got["email"] if r[0] == post["id"]] == [
            (post["id"], "ann"), (post["id"], "mia"), (post["id"], "tom"),
        ]  # fmt: skip
        member = keys.home_member(post["id"]).encode()
        assert member not in await s.redis.zrange(keys.home(0, "mia"), 0, -1)
