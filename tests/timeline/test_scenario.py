"""The Timelines scenario, end to end through the HTTP API and the real timeline worker.

A team account `ops` with two posters (pat, quinn); members mia and tom; an admin; an external
follower eve; a mandatory `all_members` enrolment, and nina, a member created after it (and
after ops's first posts). Internal and public posts, a reply tree, DMs. Then every reader's
view is checked — a member, a poster, the external follower, an anonymous reader, a third
party to the DMs: timelines, account logs, posts by id, threads, conversations. Not visible is
404, never a hint; a DM never shows up anywhere but its two parties' conversations.

Run with 1 and with 3 event-log partitions, so follower hashes, homes, reply indexes and the
two halves of a conversation live in different partitions.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from muster import keys
from muster.settings import Settings
from timeline.conftest import ADMIN_TOKEN, OpenStack, Stack, zmembers

pytestmark = pytest.mark.anyio


async def texts_of(stack: Stack, path: str, token: str | None) -> list[str]:
    return [item["text"] for item in await stack.ok("GET", path, token=token)]


@pytest.mark.parametrize("partitions", [1, 3])
async def test_every_reader_sees_exactly_what_they_may(
    timeline_settings: Settings, open_stack: OpenStack, partitions: int
) -> None:
    settings = msgspec.structs.replace(timeline_settings, partitions=partitions)
    reader: str | None  # a token, or None: anonymous
    token: str | None
    async with open_stack(settings) as s:
        # --- the cast ------------------------------------------------------------------------
        pat = await s.person("pat")
        quinn = await s.person("quinn")
        mia = await s.person("mia")
        tom = await s.person("tom")
        eve = await s.person("eve", "external")
        await s.team("ops", "pat", "quinn")
        enrolment = await s.ok(
            "PUT",
            "/v1/accounts/ops/enrolments",
            202,
            token=ADMIN_TOKEN,
            json={"followers": "all_members", "channels": ["app"], "mandatory": True},
        )
        assert enrolment["followers"] == 5  # admin, pat, quinn, mia, tom (not eve: external)
        await s.follow(eve, "ops")
        await s.settle()

        # --- posts and replies -----------------------------------------------------------------
        p_int = await s.post(pat, "ops internal: db failover at 14:00", as_="ops")
        p_pub = await s.post(
            quinn, "ops public: status page degraded", as_="ops", visibility="public"
        )
        assert p_int["visibility"] == "internal"  # the default
        await s.settle()
        nina = await s.person("nina")  # after the enrolment and after ops's first posts
        await s.settle()
        r1 = await s.post(mia, "mia: seeing it in eu-west too", in_reply_to=p_pub["id"])
        r2 = await s.post(eve, "eve: our checkout fails", in_reply_to=p_pub["id"])
        assert r2["visibility"] == "public"  # an external's default
        await s.settle()  # r3 replies to r2: its parent must be projected first
        r3 = await s.post(
            quinn,
            "ops public: fix rolling out",
            as_="ops",
            visibility="public",
            in_reply_to=r2["id"],
        )
        r4 = await s.post(pat, "ops internal: failover done", as_="ops", in_reply_to=p_int["id"])
        r5 = await s.post(pat, "pat public aside", visibility="public", in_reply_to=p_int["id"])
        # eve cannot reply to what she cannot see, and learns nothing from trying
        refused = await s.call(
            "POST", "/v1/posts", token=eve, json={"text": "x", "in_reply_to": p_int["id"]}
        )
        assert refused.status_code == 404, refused.text

        # --- DMs ---------------------------------------------------------------------------------
        d1 = await s.dm(mia, "eve", "DM mia->eve: can you share a trace id?")
        d2 = await s.dm(eve, "mia", "DM eve->mia: trace 4f2a")
        d3 = await s.dm(pat, "mia", "DM pat->mia: call me")
        await s.settle()
        posts = {p["id"]: p for p in (p_int, p_pub, r1, r2, r3, r4, r5)}
        name = {
            p["id"]: n
            for n, p in {
                "p_int": p_int,
                "p_pub": p_pub,
                "r1": r1,
                "r2": r2,
                "r3": r3,
                "r4": r4,
                "r5": r5,
            }.items()
        }

        async def named(path: str, token: str | None) -> list[str]:
            return [name[i] for i in await s.ids(path, token)]

        # --- the enrolment: mandatory, and nina (created later) follows too ------------------
        follows = await s.ok("GET", "/v1/me/follows", token=nina)
        assert follows == [{"account": "ops", "channels": ["app"], "mandatory": True}]
        refused = await s.call("DELETE", "/v1/me/follows/ops", token=nina)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "mandatory_follow"
        account = await s.ok("GET", "/v1/accounts/ops")
        assert account["followers_count"] == 7  # admin pat quinn mia tom nina + eve

        # --- home timelines, newest first --------------------------------------------------------
        home = "/v1/timelines/home"
        assert await named(home, mia) == ["r4", "r3", "r1", "p_pub", "p_int"]
        assert await named(home, tom) == ["r4", "r3", "p_pub", "p_int"]
        assert await named(home, nina) == ["r4", "r3", "p_pub", "p_int"]  # backfill + fan-out
        assert await named(home, pat) == ["r5", "r4", "r3", "p_pub", "p_int"]  # own post too
        assert await named(home, quinn) == ["r4", "r3", "p_pub", "p_int"]
        assert await named(home, ADMIN_TOKEN) == ["r4", "r3", "p_pub", "p_int"]
        assert await named(home, eve) == ["r3", "r2", "p_pub"]  # public only, plus her own
        assert (await s.call("GET", home)).status_code == 401  # anonymous: no home

        # --- account logs ----------------------------------------------------------------------
        for member in (mia, pat, tom):
            assert await named("/v1/accounts/ops/posts", member) == ["r4", "r3", "p_pub", "p_int"]
        assert await named("/v1/accounts/ops/posts", eve) == ["r3", "p_pub"]
        assert await named("/v1/accounts/ops/posts", None) == ["r3", "p_pub"]
        assert await named("/v1/accounts/pat/posts", eve) == ["r5"]
        assert await named("/v1/accounts/mia/posts", mia) == ["r1"]
        assert await named("/v1/accounts/mia/posts", tom) == ["r1"]
        assert await named("/v1/accounts/mia/posts", eve) == []
        assert await named("/v1/accounts/mia/posts", None) == []
        assert await named("/v1/accounts/eve/posts", None) == ["r2"]

        # --- posts by id: not visible is 404 -----------------------------------------------------
        internal = {"p_int", "r1", "r4"}
        for post_id, post in posts.items():
            for employee in (mia, pat, nina, ADMIN_TOKEN):
                got = await s.ok("GET", f"/v1/posts/{post_id}", token=employee)
                assert got == post  # the stored view is the one the write answered
            for reader_name, reader in (("eve", eve), ("anonymous", None)):
                status = await s.status(f"/v1/posts/{post_id}", reader)
                expected = 404 if name[post_id] in internal else 200
                assert status == expected, (reader_name, name[post_id])

        # --- threads ------------------------------------------------------------------------------
        async def thread(post: dict[str, Any], token: str | None) -> tuple[list[str], list[str]]:
            body = await s.ok("GET", f"/v1/posts/{post['id']}/thread", token=token)
            assert body["post"] == post
            return [name[a["id"]] for a in body["ancestors"]], [
                name[r["id"]] for r in body["replies"]
            ]

        assert await thread(p_pub, mia) == ([], ["r1", "r2"])
        assert await thread(p_pub, eve) == ([], ["r2"])
        assert await thread(p_pub, None) == ([], ["r2"])
        assert await thread(r3, mia) == (["p_pub", "r2"], [])
        assert await thread(r3, eve) == (["p_pub", "r2"], [])
        assert await thread(r2, None) == (["p_pub"], ["r3"])
        assert await thread(p_int, pat) == ([], ["r4", "r5"])
        assert await thread(r4, quinn) == (["p_int"], [])
        # a public reply to an internal post: visible, but its parent is not
        assert await thread(r5, mia) == (["p_int"], [])
        assert await thread(r5, eve) == ([], [])
        assert await thread(r5, None) == ([], [])
        for hidden in (p_int, r1, r4):
            for reader in (eve, None):
                assert await s.status(f"/v1/posts/{hidden['id']}/thread", reader) == 404

        # --- direct messages ------------------------------------------------------------------
        def convs(body: list[dict[str, Any]]) -> list[tuple[str, str]]:
            return [(c["with"], c["last"]["text"]) for c in body]

        assert convs(await s.ok("GET", "/v1/dms", token=mia)) == [
            ("pat", d3["text"]),
            ("eve", d2["text"]),
        ]
        assert convs(await s.ok("GET", "/v1/dms", token=eve)) == [("mia", d2["text"])]
        assert convs(await s.ok("GET", "/v1/dms", token=pat)) == [("mia", d3["text"])]
        both = [d1["text"], d2["text"]]
        assert await texts_of(s, "/v1/dms/eve", mia) == both  # oldest first
        assert await texts_of(s, "/v1/dms/mia", eve) == both
        assert await s.ok("GET", "/v1/dms/eve", token=mia) == [d1, d2]
        assert await texts_of(s, "/v1/dms/mia", pat) == [d3["text"]]
        assert await texts_of(s, "/v1/dms/pat", eve) == []
        # a third party sees nothing of them
        assert await s.ok("GET", "/v1/dms", token=tom) == []
        for other in ("mia", "eve", "pat"):
            assert await s.ok("GET", f"/v1/dms/{other}", token=tom) == []
        assert (await s.call("GET", "/v1/dms")).status_code == 401
        # a DM is not a post, for anyone, its parties included
        for dm in (d1, d2, d3):
            for reader in (mia, eve, pat, tom, None):
                assert await s.status(f"/v1/posts/{dm['id']}", reader) == 404
        # ... and never in a timeline or an account log
        dm_ids = {d1["id"], d2["id"], d3["id"]}
        readers = {"mia": mia, "eve": eve, "pat": pat, "tom": tom, "nina": nina, "quinn": quinn}
        for token in readers.values():
            assert not dm_ids & set(await s.ids("/v1/timelines/home?limit=100", token))
        for handle in (*readers, "ops", "admin"):
            for token in (*readers.values(), None):
                assert not dm_ids & set(await s.ids(f"/v1/accounts/{handle}/posts", token))
        # ... nor in any timeline or log key of the projections
        async for key in s.redis.scan_iter(count=1000):
            if b":home:" in key or b":log:" in key or b":publog:" in key:
                assert not dm_ids & set(await zmembers(s.redis, key.decode())), key

        # --- what the worker stored: each post once in each home ------------------------------
        for handle in ("mia", "tom", "nina", "pat", "quinn", "admin", "eve"):
            p = keys.partition_of(handle, partitions)
            home_ids = [keys.home_member(m) for m in await zmembers(s.redis, keys.home(p, handle))]
            assert len(home_ids) == len(set(home_ids))
            if handle == "eve":
                assert not {p_int["id"], r1["id"], r4["id"]} & set(home_ids)

        # --- eve unfollows: ops's posts leave her home, her own stay ----------------------------
        await s.unfollow(eve, "ops")
        await s.settle()
        assert await named(home, eve) == ["r2"]
        p = keys.partition_of("eve", partitions)
        assert await zmembers(s.redis, keys.home(p, "eve")) == [keys.home_member(r2["id"])]
        # and a later ops post reaches every member, not eve
        late = await s.post(quinn, "ops public: resolved", as_="ops", visibility="public")
        await s.settle()
        name[late["id"]] = "late"
        assert (await named(home, nina))[0] == "late"
        assert await named(home, eve) == ["r2"]
        assert (await named("/v1/accounts/ops/posts", None))[0] == "late"
