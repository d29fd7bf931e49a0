"""The write side is a function of the events: what a script appends, `apply` reproduces.

lua/enrol.lua merges an enrolment into a follow record, takes the pair's seq and writes both
into the FollowerEnrolled it appends, building that JSON in Lua: here it is decoded with
msgspec, and `WriteSide.apply` of the decoded event, on an empty Redis, writes the very
record and seq the script wrote.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from muster import events, keys, scripts
from muster.api import accounts
from muster.ids import IdGenerator
from muster.records import Follow, email_entry
from muster.writeside import WriteSide

pytestmark = pytest.mark.anyio
_ids = IdGenerator(node=3)


def enrolment(follower: str, channels: tuple[str, ...], *, enrolment: str | None = None) -> Any:
    return events.FollowerEnrolled(
        id=_ids.next(),
        actor="admin",
        at=events.utcnow(),
        follower=follower,
        account="ops",
        channels=channels,
        mandatory=True,
        enrolment=enrolment,
    )


async def appended(redis: aioredis.Redis) -> list[events.AnyEvent]:
    entries: Any = await redis.xrange(keys.events(0))
    return [events.decode(fields[events.STREAM_FIELD]) for _, fields in entries]


async def state(redis: aioredis.Redis, follower: str) -> tuple[Any, Any]:
    return (
        await redis.hget(keys.follows(0, follower), "ops"),
        await redis.hget(keys.follow_seq(0, follower), "ops"),
    )


async def test_enrol_script_appends_the_event_apply_reproduces(aredis: aioredis.Redis) -> None:
    side = WriteSide(aredis, partitions=1)
    chosen = Follow("ops", ("app", "email"), False)
    await aredis.hset(keys.follows(0, "ann"), "ops", chosen.encode())
    await aredis.hset(keys.follow_seq(0, "ann"), "ops", 4)  # she changed it 4 times before

    event = enrolment("ann", ("sms", "app"))
    await side.enrol(aredis, event)
    (stored,) = await appended(aredis)
    assert stored == msgspec.structs.replace(event, follow_channels=("app", "email", "sms"), seq=5)
    written = await state(aredis, "ann")
    assert written == (b"app,email,sms|1", b"5")

    await aredis.delete(keys.follows(0, "ann"), keys.follow_seq(0, "ann"))
    async with aredis.pipeline(transaction=True) as pipe:
        await side.apply(pipe, stored)
        await pipe.execute()
    assert await state(aredis, "ann") == written


async def test_enrol_script_with_a_done_set_enrols_each_person_once(
    aredis: aioredis.Redis,
) -> None:
    side = WriteSide(aredis, partitions=1)
    done = keys.enrolment_done(0, "1234")
    for _ in range(3):  # an expansion run again after a crash
        for follower in ("ann", "bob"):
            await side.enrol(aredis, enrolment(follower, ("app",), enrolment="1234"), done=done)
    stored = await appended(aredis)
    assert [(e.follower, e.seq) for e in stored if isinstance(e, events.FollowerEnrolled)] == [
        ("ann", 1),
        ("bob", 1),
    ]


def test_includes_are_expanded_once() -> None:
    text = scripts.source("enrol")
    assert "--! include" not in text
    assert text.count("local function merge_channels") == 1


# --- the email index (keys.emails): company sign-in finds an account by its address -----------
def created(handle: str, email: str | None) -> events.AccountCreated:
    return events.AccountCreated(
        id=_ids.next(), actor="admin", at=events.utcnow(), handle=handle,
        account_id=_ids.next(), kind="person", role="member", email=email,
    )  # fmt: skip


def contacts_changed(handle: str, email: str | None) -> events.ContactPointsChanged:
    return events.ContactPointsChanged(
        id=_ids.next(), actor=handle, at=events.utcnow(), handle=handle, email=email
    )


async def applied(redis: aioredis.Redis, *batch: events.AnyEvent) -> None:
    side = WriteSide(redis, partitions=2)
    for event in batch:
        async with redis.pipeline(transaction=True) as pipe:
            await side.apply(pipe, event)
            await pipe.execute()


async def index(redis: aioredis.Redis) -> set[str]:
    found: set[str] = set()
    for p in range(2):
        entries: list[bytes] = await redis.zrange(keys.emails(p), 0, -1)  # type: ignore[assignment]
        found.update(entry.decode() for entry in entries)
    return found


async def test_the_email_index_follows_each_accounts_current_address(
    aredis: aioredis.Redis,
) -> None:
    await applied(
        aredis,
        created("mia", "Mia.K@Example.COM"),
        created("pat", None),
        created("ops", "ops@example.com"),
    )
    assert await index(aredis) == {"mia.k@example.com\nmia", "ops@example.com\nops"}

    # A new address replaces the old one (the script builds the old entry as email_entry does:
    # only ASCII letters lowered, so a non-ASCII local part is dropped exactly).
    await applied(
        aredis, contacts_changed("mia", "Míà@Example.org"), contacts_changed("pat", "p@x.io")
    )
    assert await index(aredis) == {
        email_entry("Míà@Example.org", "mia"), "p@x.io\npat", "ops@example.com\nops",
    }  # fmt: skip
    await applied(aredis, contacts_changed("mia", "mia@example.com"))
    await applied(aredis, contacts_changed("pat", None))
    assert await index(aredis) == {"mia@example.com\nmia", "ops@example.com\nops"}


async def test_accounts_are_found_by_email_in_every_partition(aredis: aioredis.Redis) -> None:
    # mia and eve share an address; mia@example.co is a prefix of it
    await applied(
        aredis,
        created("mia", "MIA@example.com"),
        created("eve", "mia@example.com"),
        created("mi", "mia@example.co"),
        created("pat", "pat@example.com"),
    )
    assert {keys.partition_of(h, 2) for h in ("mia", "eve")} == {0, 1}
    found = await accounts.with_email(aredis, "Mia@Example.com", 2)
    assert sorted(a.handle for a in found) == ["eve", "mia"]
    assert [a.handle for a in await accounts.with_email(aredis, "mia@example.co", 2)] == ["mi"]
    assert await accounts.with_email(aredis, "nobody@example.com", 2) == []
    assert await accounts.with_email(aredis, "mia@example", 2) == []
