"""Enrolments expanded by the timeline worker: once, as the admin last said, never history.

- A member created after an `all_members` rule follows from then on: the posts made before
  are in their home (backfill) but are not delivered to them as news.
- An enrolment replaced by a later one of the same account, or already expanded, or a v1
  one (its api enrolled everyone itself), enrols nobody when handled (again).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from muster import events, keys
from muster.enrolments import Enrolments
from muster.settings import Settings
from timeline.conftest import ADMIN_TOKEN, OpenStack, Stack

pytestmark = pytest.mark.anyio


async def sms_requests(redis: aioredis.Redis, settings: Settings, handle: str) -> list[str]:
    q = keys.partition_of(handle, settings.partitions)
    entries: Any = await redis.xrange(keys.deliveries(q, "sms"))
    found = []
    for _, fields in entries:
        raw = fields[events.STREAM_FIELD]
        if f'"recipient":"{handle}"'.encode() in raw:
            found.append(raw.decode())
    return found


async def enrol_all(s: Stack, account: str, **body: Any) -> dict[str, Any]:
    enrolment: dict[str, Any] = await s.ok(
        "PUT",
        f"/v1/accounts/{account}/enrolments",
        202,
        token=ADMIN_TOKEN,
        json={"followers": "all_members", **body},
    )
    return enrolment


async def test_a_member_created_after_a_rule_is_not_sent_the_posts_before(
    timeline_settings: Settings, open_stack: OpenStack, aredis: aioredis.Redis
) -> None:
    async with open_stack(timeline_settings) as s:
        await s.team("ops", "admin")
        await enrol_all(s, "ops", channels=["sms"], mandatory=True)
        old = [await s.post(ADMIN_TOKEN, f"before mia #{n}", as_="ops") for n in range(3)]
        await s.settle()
        mia = await s.person("mia", phone="+15550001234")
        await s.settle()
        assert await s.ok("GET", "/v1/me/follows", token=mia) == [
            {"account": "ops", "channels": ["app", "sms"], "mandatory": True}
        ]
        assert await sms_requests(aredis, timeline_settings, "mia") == []
        home = await s.ids("/v1/timelines/home", mia)
        assert {p["id"] for p in old} <= set(home)  # history is in her home, not in her SMS
        news = await s.post(ADMIN_TOKEN, "after mia joined", as_="ops")
        await s.settle()
        (request,) = await sms_requests(aredis, timeline_settings, "mia")
        assert news["id"] in request


async def test_an_enrolment_replaced_or_expanded_or_of_v1_enrols_nobody(
    timeline_settings: Settings, open_stack: OpenStack, aredis: aioredis.Redis
) -> None:
    async with open_stack(timeline_settings) as s:
        await s.team("ops", "admin")
        await s.person("mia")
        first = await enrol_all(s, "ops", mandatory=True)
        second = await enrol_all(s, "ops", mandatory=False)
        await s.settle()
        logged: Any = []
        for p in range(timeline_settings.partitions):
            logged += await aredis.xrange(keys.events(p))
        found = [events.decode(fields[events.STREAM_FIELD]) for _, fields in logged]
        by_id = {e.id: e for e in found}
        replaced, latest = by_id[first["id"]], by_id[second["id"]]
        assert isinstance(replaced, events.MembersEnrolled)
        assert isinstance(latest, events.MembersEnrolled)
        enrolments = Enrolments(aredis, partitions=timeline_settings.partitions)
        assert await enrolments.expand(replaced) == 0  # the later rule says otherwise
        assert await enrolments.expand(latest) == 0  # expanded already
        v1 = events.MembersEnrolled(
            id="1", actor="admin", at=events.utcnow(), v=1, account="ops", mandatory=True
        )
        assert await enrolments.expand(v1) == 0
        follows = await s.ok("GET", "/v1/me/follows", token=(await s.person("zed")))
        assert follows == [{"account": "ops", "channels": ["app"], "mandatory": False}]
