"""Account lifecycle: token reset, deactivation and reactivation, named tokens.

Each change that stops a token working must hold on the very next request in every api
process: `two_apis` runs two apps on one Redis, each with its own token cache and its own
subscription to auth changes; the tests warm the second one's cache, change the account
through the first, and ask the second at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from api.conftest import ADMIN_TOKEN, Api, OpenApi, assert_error
from muster import events, keys
from muster.api import accounts, writes
from muster.api.schemas import UpdateMe
from muster.api.tokens import TOKEN_TTL_S
from muster.events import utcnow
from muster.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def second(api_settings: Settings, open_api: OpenApi, api: Api) -> AsyncIterator[Api]:
    """Another api process on the same Redis (started after `api`, which made admin)."""
    async with open_api(api_settings) as other:
        yield other


async def me(api: Api, token: str) -> int:
    return (await api.call("GET", "/v1/me", token=token)).status_code


async def test_an_admin_resets_a_token_and_the_old_one_stops_at_once_everywhere(
    api: Api, second: Api
) -> None:
    old = await api.person("mia")
    assert await me(second, old) == 200  # cached in the second process now
    reply = await api.call("POST", "/v1/accounts/mia/token", token=ADMIN_TOKEN)
    assert reply.status_code == 200, reply.text
    new = reply.json()["token"]
    assert set(reply.json()) == {"token"}
    assert new.startswith("mst_")
    assert new != old
    assert_error(await second.call("GET", "/v1/me", token=old), 401, "unknown_token")
    assert_error(await api.call("GET", "/v1/me", token=old), 401, "unknown_token")
    assert await me(second, new) == 200
    (reset,) = [e for e in await api.events() if isinstance(e, events.AccountTokenReset)]
    assert (reset.actor, reset.handle, reset.role, reset.v) == ("admin", "mia", None, 2)
    mia = (await api.call("GET", "/v1/me", token=new)).json()
    assert mia["role"] == "member"  # a reset is not a promotion (v1 resets made admins)
    assert await api.redis.get(keys.token(accounts.hash_token(old))) is None


async def test_token_reset_refusals_change_nothing(api: Api) -> None:
    member = await api.person("mia")
    await api.create("ops", "team")
    before = await api.snapshot()
    assert_error(
        await api.call("POST", "/v1/accounts/ops/token", token=ADMIN_TOKEN), 422, "wrong_kind"
    )
    assert_error(
        await api.call("POST", "/v1/accounts/nobody/token", token=ADMIN_TOKEN),
        404,
        "no_such_account",
    )
    assert_error(await api.call("POST", "/v1/accounts/mia/token", token=member), 403, "admin_only")
    assert await api.snapshot() == before


async def test_a_deactivated_account_cannot_act_receives_nothing_and_keeps_its_handle(
    api: Api, second: Api
) -> None:
    mia = await api.person("mia", email="mia@example.com", phone="+447700900123")
    pat = await api.person("pat")
    await api.create("ops", "team")
    await api.call("PUT", "/v1/accounts/ops/posters/mia", token=ADMIN_TOKEN)
    posted = await api.call("POST", "/v1/posts", token=mia, json={"text": "before"})
    assert posted.status_code == 202
    assert await me(second, mia) == 200
    p = keys.partition_of("mia", api.settings.partitions)
    assert await api.redis.sismember(keys.reach(p, "email"), "mia")

    reply = await api.call("PATCH", "/v1/accounts/mia", token=ADMIN_TOKEN, json={"active": False})
    assert reply.status_code == 200, reply.text
    assert reply.json()["active"] is False
    for app in (second, api):  # at once, in both processes
        refused = await app.call("POST", "/v1/posts", token=mia, json={"text": "after"})
        assert_error(refused, 401, "account_deactivated")
    # Receives nothing: no channel reaches them, nobody can DM them.
    for channel in keys.OFFAPP_CHANNELS:
        assert not await api.redis.sismember(keys.reach(p, channel), "mia")
    dm = await second.call("POST", "/v1/dms", token=pat, json={"to": "mia", "text": "hi"})
    assert_error(dm, 422, "account_deactivated", field="to")
    # Keeps its history and its handle.
    listed = (await api.call("GET", "/v1/accounts/mia", token=pat)).json()
    assert listed["active"] is False
    taken = await api.call(
        "POST", "/v1/accounts", token=ADMIN_TOKEN, json={"handle": "mia", "kind": "person"}
    )
    assert_error(taken, 409, "handle_taken")
    directory = (await api.call("GET", "/v1/accounts", token=ADMIN_TOKEN)).json()
    assert {a["handle"]: a["active"] for a in directory}["mia"] is False

    # Twice is once; reactivation reopens the channels its contact points had.
    length = await api.log_length()
    await api.call("PATCH", "/v1/accounts/mia", token=ADMIN_TOKEN, json={"active": False})
    assert await api.log_length() == length
    back = await api.call("PATCH", "/v1/accounts/mia", token=ADMIN_TOKEN, json={"active": True})
    assert back.json()["active"] is True
    assert await me(second, mia) == 200
    assert await api.redis.sismember(keys.reach(p, "email"), "mia")
    assert await api.redis.sismember(keys.reach(p, "sms"), "mia")
    assert not await api.redis.sismember(keys.reach(p, "webhook"), "mia")
    changes = [
        e
        for e in await api.events()
        if isinstance(e, events.AccountDeactivated | events.AccountReactivated)
    ]
    assert [type(e).__name__ for e in changes] == ["AccountDeactivated", "AccountReactivated"]
    assert changes[1].channels == ("email", "sms")  # type: ignore[union-attr]


async def test_contact_points_changed_while_deactivated_open_no_channel(api: Api) -> None:
    """The directory (SCIM) may update a leaver's email: it must not make them reachable."""
    mia = await api.person("mia")
    account = await api.state.tokens.account_for(mia)
    assert account is not None
    await api.call("PATCH", "/v1/accounts/mia", token=ADMIN_TOKEN, json={"active": False})
    off = await accounts.load(api.redis, "mia", api.settings.partitions)
    assert off is not None
    assert not off.active
    await writes.update_me(api.state, off, UpdateMe(email="mia@example.com"))
    p = keys.partition_of("mia", api.settings.partitions)
    assert not await api.redis.sismember(keys.reach(p, "email"), "mia")
    await api.call("PATCH", "/v1/accounts/mia", token=ADMIN_TOKEN, json={"active": True})
    assert await api.redis.sismember(keys.reach(p, "email"), "mia")


async def test_posting_as_a_deactivated_team_is_refused(api: Api) -> None:
    mia = await api.person("mia")
    await api.create("ops", "team")
    await api.call("PUT", "/v1/accounts/ops/posters/mia", token=ADMIN_TOKEN)
    await api.call("PATCH", "/v1/accounts/ops", token=ADMIN_TOKEN, json={"active": False})
    refused = await api.call("POST", "/v1/posts", token=mia, json={"text": "x", "as": "ops"})
    assert_error(refused, 422, "account_deactivated", field="as")


async def test_deactivation_refusals(api: Api) -> None:
    member = await api.person("mia")
    before = await api.snapshot()
    body = {"active": False}
    assert_error(
        await api.call("PATCH", "/v1/accounts/admin", token=ADMIN_TOKEN, json=body),
        422,
        "cannot_deactivate_self",
        field="active",
    )
    assert_error(
        await api.call("PATCH", "/v1/accounts/nobody", token=ADMIN_TOKEN, json=body),
        404,
        "no_such_account",
    )
    assert_error(await api.call("PATCH", "/v1/accounts/mia", token=member, json=body), 403)
    assert_error(
        await api.call("PATCH", "/v1/accounts/mia", token=ADMIN_TOKEN, json={"active": "no"}), 422
    )
    assert_error(
        await api.call("PATCH", "/v1/accounts/mia", token=ADMIN_TOKEN, json={"role": "admin"}),
        422,
    )
    assert await api.snapshot() == before


async def test_named_tokens_work_beside_the_own_token_until_revoked(api: Api, second: Api) -> None:
    mia = await api.person("mia")
    made = await api.call("POST", "/v1/me/tokens", token=mia, json={"name": "deploy script"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert set(body) == {"id", "name", "created_at", "expires_at", "token"}
    assert body["name"] == "deploy script"
    assert body["expires_at"] is None
    script = body["token"]
    assert (await second.call("GET", "/v1/me", token=script)).json()["handle"] == "mia"
    posted = await second.call("POST", "/v1/posts", token=script, json={"text": "from cron"})
    assert posted.status_code == 202
    assert posted.json()["author"] == "mia"
    listed = (await api.call("GET", "/v1/me/tokens", token=mia)).json()
    assert listed == [{k: v for k, v in body.items() if k != "token"}]
    # Revoked: at once, in both processes; the own token keeps working.
    gone = await api.call("DELETE", f"/v1/me/tokens/{body['id']}", token=mia)
    assert gone.status_code == 204
    assert_error(await second.call("GET", "/v1/me", token=script), 401, "unknown_token")
    assert await me(second, mia) == 200
    assert (await api.call("GET", "/v1/me/tokens", token=mia)).json() == []
    again = await api.call("DELETE", f"/v1/me/tokens/{body['id']}", token=mia)
    assert_error(again, 404, "no_such_token")


async def test_one_cannot_revoke_or_see_anothers_tokens(api: Api) -> None:
    mia = await api.person("mia")
    pat = await api.person("pat")
    made = (await api.call("POST", "/v1/me/tokens", token=mia, json={"name": "x"})).json()
    assert (await api.call("GET", "/v1/me/tokens", token=pat)).json() == []
    refused = await api.call("DELETE", f"/v1/me/tokens/{made['id']}", token=pat)
    assert_error(refused, 404, "no_such_token")
    assert await me(api, made["token"]) == 200


async def test_an_expired_named_token_stops_working_and_is_revoked_by_the_next_one(
    api: Api,
) -> None:
    mia = await api.person("mia")
    account = await api.state.tokens.account_for(mia)
    assert account is not None
    soon = utcnow() + timedelta(seconds=0.3)
    named, token = await writes.create_named_token(api.state, account, "short", expires_at=soon)
    assert await me(api, token) == 200  # cached, but never past its expiry
    deadline = soon + timedelta(seconds=TOKEN_TTL_S)
    while utcnow() < deadline and await me(api, token) == 200:
        pass
    assert utcnow() < soon + timedelta(seconds=1)  # refused as soon as it expired
    assert_error(await api.call("GET", "/v1/me", token=token), 401, "unknown_token")
    listed = (await api.call("GET", "/v1/me/tokens", token=mia)).json()
    assert [(t["id"], t["expired"]) for t in listed] == [(named.id, True)]
    await api.call("POST", "/v1/me/tokens", token=mia, json={"name": "next"})
    listed = (await api.call("GET", "/v1/me/tokens", token=mia)).json()
    assert [t["name"] for t in listed] == ["next"]
    revoked = [e for e in await api.events() if isinstance(e, events.NamedTokenRevoked)]
    assert [(e.token_id, e.actor) for e in revoked] == [(named.id, "system")]


async def test_named_token_bodies_are_checked(api: Api) -> None:
    mia = await api.person("mia")
    service = (await api.create("svc", "service"))["token"]
    before = await api.snapshot()
    for body in ({}, {"name": ""}, {"name": "x" * 101}, {"name": "x", "expires_in_days": 0}):
        assert_error(await api.call("POST", "/v1/me/tokens", token=mia, json=body), 422)
    assert_error(
        await api.call("POST", "/v1/me/tokens", token=mia, json={"name": "   "}), 422, "text_empty"
    )
    assert_error(
        await api.call("POST", "/v1/me/tokens", token=service, json={"name": "x"}),
        403,
        "person_only",
    )
    assert await api.snapshot() == before
    days = await api.call(
        "POST", "/v1/me/tokens", token=mia, json={"name": "x", "expires_in_days": 30}
    )
    assert days.json()["expires_at"] is not None


async def test_a_process_that_lost_its_subscription_caches_nothing(api: Api, second: Api) -> None:
    """Without the subscription a process could miss a change: it must read Redis each time."""
    mia = await api.person("mia")
    await second.state.tokens.stop()
    assert await me(second, mia) == 200
    await api.call("PATCH", "/v1/accounts/mia", token=ADMIN_TOKEN, json={"active": False})
    assert_error(await second.call("GET", "/v1/me", token=mia), 401, "account_deactivated")
