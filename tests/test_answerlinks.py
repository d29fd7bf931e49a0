"""muster.answerlinks on a real redis-server: links, page tokens and per-phone SMS codes.

The end-to-end behaviour (messages carry them, answers come back through them) is in
tests/delivery/test_rollcall_answers.py; here, the rules each piece keeps on its own.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from muster import answerlinks, keys
from muster.answerlinks import Links, now_ms
from muster.records import SmsCodeBlock, sms_code_block_of

pytestmark = pytest.mark.anyio
PHONE = "+15551230009"
HOUR_MS = 3600 * 1000


async def minted(links: Links, rollcall: str, recipient: str, channel: str) -> str:
    async with links.redis.pipeline(transaction=False) as pipe:
        link = await links.mint(pipe, rollcall, recipient, channel, ttl_s=600)
        await pipe.execute()
    return link


async def test_a_link_is_per_recipient_and_channel_the_same_on_a_resend_and_kept_hashed(
    aredis: aioredis.Redis,
) -> None:
    links = Links(aredis, partitions=4)
    first = await minted(links, "111", "ana", "email")
    assert answerlinks.is_link(first)
    assert await minted(links, "111", "ana", "email") == first  # a resend: the same link
    others = {
        await minted(links, "111", "ana", "sms"),
        await minted(links, "111", "ben", "email"),
        await minted(links, "112", "ana", "email"),
    }
    assert first not in others
    assert len(others) == 3
    found = await links.resolve(first)
    assert found is not None
    assert (found.rollcall, found.recipient, found.channel) == ("111", "ana", "email")
    stored: Any = await aredis.keys("*rc:link:*")
    assert len(stored) == 4
    assert not any(first.encode() in key for key in stored)  # only its hash is a key
    values: Any = await aredis.mget(stored)
    assert all(first.encode() not in value for value in values)
    # a link made under another key (another deployment), or any other string, is nothing
    assert await links.resolve("A" * 16) is None
    assert await links.resolve(first + "x") is None


async def test_page_tokens_are_bound_to_their_link_and_expire(aredis: aioredis.Redis) -> None:
    links = Links(aredis, partitions=1)
    link = await minted(links, "111", "ana", "email")
    other = await minted(links, "111", "ben", "email")
    token = await links.page_token(link)
    age = await links.page_token_age_s(link, token)
    assert age is not None
    assert 0 <= age < 5
    assert await links.page_token_age_s(other, token) is None
    issued, _, mac = token.partition(".")
    assert await links.page_token_age_s(link, f"{int(issued) + 1}.{mac}") is None
    assert await links.page_token_age_s(link, f"{issued}.{'A' * len(mac)}") is None
    for junk in ("", ".", "x.y", "1", token + "A", "9" * 80):
        assert await links.page_token_age_s(link, junk) is None
    stale = await links.page_token(link, now_ms() - (answerlinks.PAGE_TOKEN_TTL_S + 1) * 1000)
    assert await links.page_token_age_s(link, stale) is None


async def test_a_phones_open_roll_calls_get_distinct_codes(aredis: aioredis.Redis) -> None:
    links = Links(aredis, partitions=2)
    until = now_ms() + HOUR_MS
    assert await links.allocate_codes(PHONE, "111", "ana", 3, expires_ms=until) == 1
    assert await links.allocate_codes(PHONE, "112", "ana", 2, expires_ms=until) == 4
    # a shared phone: another person's block for the same roll-call is their own
    assert await links.allocate_codes(PHONE, "111", "ben", 2, expires_ms=until) == 6
    # a resend: the same block, its expiry moved later
    assert await links.allocate_codes(PHONE, "111", "ana", 3, expires_ms=until + HOUR_MS) == 1
    assert await links.code_holder(PHONE, 1) == ("111", "ana", 0)
    assert await links.code_holder(PHONE, 3) == ("111", "ana", 2)
    assert await links.code_holder(PHONE, 5) == ("112", "ana", 1)
    assert await links.code_holder(PHONE, 7) == ("111", "ben", 1)
    assert await links.code_holder(PHONE, 8) is None
    assert await links.code_holder("+15550000000", 1) is None
    # each phone numbers its own
    assert await links.allocate_codes("+15550000000", "112", "cai", 2, expires_ms=until) == 1
    raw: Any = await aredis.hgetall(links.codes_key(PHONE))
    blocks = {k.decode(): sms_code_block_of(v) for k, v in raw.items()}
    assert blocks["111|ana"] == SmsCodeBlock(1, 3, until + HOUR_MS)  # the script's form
    ttl: Any = await aredis.pttl(links.codes_key(PHONE))
    assert HOUR_MS < ttl <= 2 * HOUR_MS
    assert PHONE not in links.codes_key(PHONE)  # no key holds a number


async def test_codes_of_roll_calls_that_are_over_are_freed(aredis: aioredis.Redis) -> None:
    links = Links(aredis, partitions=1)
    now = now_ms()
    await links.allocate_codes(PHONE, "111", "ana", 2, expires_ms=now + 50)
    await links.allocate_codes(PHONE, "112", "ana", 2, expires_ms=now + HOUR_MS)
    assert await links.allocate_codes(PHONE, "113", "ana", 2, expires_ms=now + HOUR_MS) == 5
    key = links.codes_key(PHONE)
    # 111's block ends: its codes answer nothing, and the next roll-call may take them
    await aredis.hset(key, "111|ana", SmsCodeBlock(1, 2, now - 1).encode())
    assert await links.code_holder(PHONE, 1) is None
    await aredis.hdel(key, "113|ana")
    assert await links.allocate_codes(PHONE, "114", "ana", 2, expires_ms=now + HOUR_MS) == 5
    await aredis.hset(key, "112|ana", SmsCodeBlock(3, 2, now - 1).encode())
    await aredis.hset(key, "114|ana", SmsCodeBlock(5, 2, now - 1).encode())
    # every block over: numbering starts at 1 again
    assert await links.allocate_codes(PHONE, "115", "ana", 3, expires_ms=now + HOUR_MS) == 1
    assert set((await aredis.hgetall(key)).keys()) == {b"115|ana"}
    assert await links.phone_holders(PHONE) == [("115", "ana")]


def test_link_records_live_in_the_hashs_partition() -> None:
    links = Links.__new__(Links)
    links.partitions = 8
    key = links.link_key("A" * 16)
    assert key.startswith(f"{keys.PREFIX}:{{p")
    assert ":rc:link:" in key
