"""Paging (`limit`/`before`) through the HTTP API: every item exactly once, newest first.

- ~120 posts of two teams (internal and public) and a member's own: walking home timelines
  and account logs page by page returns each visible post once, in strictly descending id
  order, for a member, an external follower and an anonymous reader — visibility filtering
  never opens a gap, also while an unfollow is not yet projected (the home still holds the
  unfollowed account's posts, which the read must skip over without losing older ones).
- Fan-out on read: with MUSTER_FANOUT_ON_READ_THRESHOLD=3 an account with more followers
  lands in keys.BIG_ACCOUNTS and is no longer fanned out; its posts are merged into its
  followers' homes at read time, interleaved with fanned-out ones, paging across the merge.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from muster import keys
from muster.settings import Settings
from timeline.conftest import OpenStack, zmembers

pytestmark = pytest.mark.anyio

PARTITIONS = 2


def newest_first(posts: list[dict[str, Any]]) -> list[str]:
    ids = [p["id"] for p in posts]
    assert len(set(ids)) == len(ids)
    return sorted(ids, reverse=True)  # ids have one width: text order is time order


def assert_walk(found: list[str], expected: list[str]) -> None:
    assert len(found) == len(set(found)), "a page repeated an item"
    assert found == sorted(found, reverse=True), "pages are not newest first"
    missing = set(expected) - set(found)
    extra = set(found) - set(expected)
    assert not missing, f"{len(missing)} missing"
    assert not extra, f"{len(extra)} unexpected"
    assert found == expected


@pytest.fixture
def paging_settings(timeline_settings: Settings) -> Settings:
    return msgspec.structs.replace(timeline_settings, partitions=PARTITIONS)


async def test_paging_returns_every_visible_post_once(
    paging_settings: Settings, open_stack: OpenStack
) -> None:
    async with open_stack(paging_settings) as s:
        pat = await s.person("pat")
        mia = await s.person("mia")
        eve = await s.person("eve", "external")
        await s.team("ops", "pat")
        await s.team("infra", "pat")
        for token in (mia, eve):
            await s.follow(token, "ops")
            await s.follow(token, "infra")
        await s.settle()

        posts: list[dict[str, Any]] = []
        # 30 mixed, then a run of 40 infra posts, then 50 mixed (mia's own among them): 120
        plan = [("ops", "infra", "mia")[n % 3] for n in range(30)]
        plan += ["infra"] * 40
        plan += [("ops", "ops", "infra", "ops", "mia")[n % 5] for n in range(50)]
        for n, account in enumerate(plan):
            visibility = "public" if n % 4 == 0 else "internal"
            if account == "mia":
                posts.append(await s.post(mia, f"mia #{n}"))  # her own, internal
            else:
                posts.append(
                    await s.post(pat, f"{account} #{n}", as_=account, visibility=visibility)
                )
        await s.settle()

        def of(*accounts: str, public: bool = False) -> list[str]:
            return newest_first(
                [
                    p
                    for p in posts
                    if p["as_account"] in accounts and (p["visibility"] == "public" or not public)
                ]
            )

        home = "/v1/timelines/home"
        for limit in (7, 1, 100):
            assert_walk(await s.walk(home, mia, limit=limit), of("ops", "infra", "mia"))
        assert_walk(await s.walk(home, eve, limit=7), of("ops", "infra", public=True))
        assert_walk(await s.walk("/v1/accounts/ops/posts", mia, limit=7), of("ops"))
        assert_walk(await s.walk("/v1/accounts/infra/posts", pat, limit=7), of("infra"))
        for reader in (eve, None):
            assert_walk(
                await s.walk("/v1/accounts/ops/posts", reader, limit=7), of("ops", public=True)
            )
            assert_walk(
                await s.walk("/v1/accounts/mia/posts", reader, limit=7), []
            )  # her posts are internal
        # pages start strictly below `before`, whatever it is
        middle = of("ops", "infra", "mia")[40]
        page = await s.ids(f"{home}?limit=5&before={middle}", mia)
        assert page == of("ops", "infra", "mia")[41:46]
        assert await s.ids(f"{home}?limit=5&before=1", mia) == []
        assert (
            await s.ids(f"{home}?limit=5&before={'9' * 19}", mia) == of("ops", "infra", "mia")[:5]
        )

        # The unfollow is on the write side, the worker has not projected it yet: mia's home
        # still holds infra's posts (a run of 40 among them), which the read filters out.
        await s.redis.hdel(keys.follows(keys.partition_of("mia", PARTITIONS), "mia"), "infra")
        for limit in (7, 3, 1):
            assert_walk(await s.walk(home, mia, limit=limit), of("ops", "mia"))


async def test_fanout_on_read_merges_big_accounts_into_homes(
    paging_settings: Settings, open_stack: OpenStack
) -> None:
    settings = msgspec.structs.replace(paging_settings, fanout_on_read_threshold=3)
    async with open_stack(settings) as s:
        pat = await s.person("pat")
        m1, m2, m3, m4, m5 = [await s.person(f"m{n}") for n in range(1, 6)]
        eve = await s.person("eve", "external")
        await s.team("all", "pat")  # the all-staff account: it will be read-merged
        await s.team("ops", "pat")  # three followers: fanned out on write
        for token in (m1, m3, m5):
            await s.follow(token, "ops")
        for token in (m1, m2):
            await s.follow(token, "all")
        await s.settle()

        early = [await s.post(pat, f"all early #{n}", as_="all") for n in range(2)]
        await s.settle()
        assert not await s.redis.sismember(keys.BIG_ACCOUNTS, "all")
        for handle in ("m1", "m2"):  # fanned out while small
            p = keys.partition_of(handle, PARTITIONS)
            member = keys.home_member(early[0]["id"])
            assert await s.redis.zscore(keys.home(p, handle), member) is not None

        for token in (m3, m4, eve):  # 5 followers now: more than 3
            await s.follow(token, "all")
        await s.settle()
        posts = list(early)
        for n in range(60):
            account = "all" if n % 3 else "ops"
            visibility = "public" if n % 4 == 0 else "internal"
            posts.append(await s.post(pat, f"{account} #{n}", as_=account, visibility=visibility))
            if n == 30:
                await s.follow(m5, "all")  # joins once `all` is read-merged: no backfill
        await s.settle()

        assert await s.redis.sismember(keys.BIG_ACCOUNTS, "all")
        assert not await s.redis.sismember(keys.BIG_ACCOUNTS, "ops")
        late_all = [p["id"] for p in posts[2:] if p["as_account"] == "all"]
        ops_ids = [p["id"] for p in posts if p["as_account"] == "ops"]
        for handle in ("m1", "m2", "m3", "m4", "m5", "eve"):
            home_key = keys.home(keys.partition_of(handle, PARTITIONS), handle)
            stored = {keys.home_member(m) for m in await zmembers(s.redis, home_key)}
            assert not stored & set(late_all), f"{handle}: a read-merged post was fanned out"
            if handle in ("m1", "m3", "m5"):
                assert set(ops_ids) <= stored, f"{handle}: ops is fanned out on write"

        def of(*accounts: str, public: bool = False) -> list[str]:
            return newest_first(
                [
                    p
                    for p in posts
                    if p["as_account"] in accounts and (p["visibility"] == "public" or not public)
                ]
            )

        home = "/v1/timelines/home"
        for limit in (7, 1, 100):
            assert_walk(await s.walk(home, m1, limit=limit), of("all", "ops"))
        assert_walk(await s.walk(home, m2, limit=7), of("all"))
        assert_walk(await s.walk(home, m3, limit=7), of("all", "ops"))
        assert_walk(await s.walk(home, m5, limit=7), of("all", "ops"))
        assert_walk(await s.walk(home, eve, limit=7), of("all", public=True))
        assert_walk(await s.walk(home, pat, limit=7), of("all", "ops"))  # all his own

        # unfollowing a read-merged account takes its posts out of the home, early ones too
        await s.unfollow(m2, "all")
        await s.unfollow(m1, "all")
        await s.settle()
        assert await s.walk(home, m2, limit=7) == []
        assert_walk(await s.walk(home, m1, limit=7), of("ops"))
