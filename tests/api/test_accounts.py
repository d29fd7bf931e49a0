"""Accounts: creation by kind and role, lookups, /v1/me and its contact points, posters.

Each write's event is read back from the event log and checked field by field.
"""

from __future__ import annotations

import base64
import hashlib
import re

import msgspec
import pytest

from api.conftest import ADMIN_TOKEN, TEAM, Api, Cast, OpenApi, assert_error
from muster import events, keys
from muster.settings import Settings

pytestmark = pytest.mark.anyio

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


# --- POST /v1/accounts ------------------------------------------------------------------------
async def test_person_gets_a_token_that_works_and_only_its_hash_is_stored(api: Api) -> None:
    before = await api.log_length()
    body = await api.create("mia", display_name="Mia Wong", email="mia@example.com")
    assert set(body) == {"id", "handle", "kind", "role", "display_name", "token"}
    assert body["handle"] == "mia"
    assert body["kind"] == "person"
    assert body["role"] == "member"  # the default role of a person
    assert body["display_name"] == "Mia Wong"
    assert body["id"].isdigit()
    token = body["token"]
    assert token.startswith("mst_")
    assert len(token) >= 40

    assert await api.log_length() == before + 1
    created = (await api.events())[-1]
    assert isinstance(created, events.AccountCreated)
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    assert created.handle == "mia"
    assert created.account_id == body["id"]
    assert created.kind == "person"
    assert created.role == "member"
    assert created.actor == "admin"
    assert created.email == "mia@example.com"
    assert created.token_hash == token_hash
    assert await api.redis.get(keys.token(token_hash)) == b"mia"
    dump = repr(await api.snapshot())
    assert token not in dump  # the token itself is never stored

    me = await api.call("GET", "/v1/me", token=token)
    assert me.status_code == 200
    assert me.json()["handle"] == "mia"


@pytest.mark.parametrize("role", ["admin", "member", "external"])
async def test_person_roles(api: Api, role: str) -> None:
    body = await api.create("pat", role=role)
    assert body["role"] == role
    me = (await api.call("GET", "/v1/me", token=body["token"])).json()
    assert me["role"] == role
    created = (await api.events())[-1]
    assert isinstance(created, events.AccountCreated)
    assert created.role == role


async def test_created_admin_can_administer(api: Api) -> None:
    boss = (await api.create("boss", role="admin"))["token"]
    await api.create("newbie", token=boss)


async def test_service_has_a_token_and_no_role(api: Api) -> None:
    body = await api.create("deploy_bot", "service", display_name="Deploy bot")
    assert body["kind"] == "service"
    assert body["role"] is None
    assert body["token"].startswith("mst_")
    me = (await api.call("GET", "/v1/me", token=body["token"])).json()
    assert me["kind"] == "service"
    assert me["role"] is None


async def test_team_has_no_token_at_all(api: Api) -> None:
    body = await api.create("incident", "team")
    assert "token" not in body
    assert body["role"] is None
    assert body["display_name"] == "incident"  # defaults to the handle
    created = (await api.events())[-1]
    assert isinstance(created, events.AccountCreated)
    assert created.kind == "team"
    assert created.token_hash is None
    raw = await api.redis.hgetall(keys.account(keys.partition_of("incident", 1), "incident"))
    assert raw
    assert b"token_hash" not in raw
    # no token of any kind maps to the team
    async for key in api.redis.scan_iter(match=keys.token("*")):
        assert await api.redis.get(key) != b"incident"


async def test_every_token_is_distinct(api: Api) -> None:
    tokens = {await api.person(f"p{i}") for i in range(20)}
    assert len(tokens) == 20


async def test_webhook_url_gets_a_standard_webhooks_secret(api: Api) -> None:
    body = await api.create("hooked", "service", webhook_url="https://hooks.example.com/muster")
    secret = body["webhook_secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    created = (await api.events())[-1]
    assert isinstance(created, events.AccountCreated)
    assert created.webhook_url == "https://hooks.example.com/muster"
    assert created.webhook_secret == secret
    me = (await api.call("GET", "/v1/me", token=body["token"])).json()
    assert me["webhook_url"] == "https://hooks.example.com/muster"
    assert "webhook_secret" not in me  # shown once, at creation


async def test_no_webhook_url_no_secret(api: Api) -> None:
    assert "webhook_secret" not in await api.create("plain")


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/x",
        "http://93.184.215.14:8080/hook?x=1",
        "https://[2606:4700::1111]/hook",
        "https://hooks.example.com.",
    ],
)
async def test_public_webhook_targets_are_accepted(api: Api, url: str) -> None:
    body = await api.create("hooked", "service", webhook_url=url)
    assert body["webhook_secret"]


async def test_private_webhook_targets_allowed_when_configured(
    api_settings: Settings, open_api: OpenApi
) -> None:
    allowing = msgspec.structs.replace(api_settings, webhook_allow_private=True)
    async with open_api(allowing) as api:
        for i, url in enumerate(["http://127.0.0.1:9000/hook", "http://localhost/h"]):
            body = await api.create(f"local{i}", "service", webhook_url=url)
            assert body["webhook_secret"].startswith("whsec_")


@pytest.mark.parametrize("phone", ["+15551234567", "+447911123456", "+8613800138000", "+1234567"])
async def test_e164_phones_are_accepted(api: Api, phone: str) -> None:
    token = await api.person("caller", phone=phone)
    assert (await api.call("GET", "/v1/me", token=token)).json()["phone"] == phone


@pytest.mark.parametrize("handle", ["a", "z" * 30, "ops_2", "0", "a_b_c_1_2_3"])
async def test_valid_handles(api: Api, handle: str) -> None:
    assert (await api.create(handle, "team"))["handle"] == handle


async def test_two_accounts_never_share_a_handle_under_concurrency(api: Api) -> None:
    import asyncio

    before = await api.log_length()
    responses = await asyncio.gather(
        *[
            api.call(
                "POST",
                "/v1/accounts",
                token=ADMIN_TOKEN,
                json={"handle": "race", "kind": kind},
            )
            for kind in ["person", "service", "team", "person", "service"]
        ]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 409, 409, 409, 409]
    assert await api.log_length() == before + 1
    # only the winner's token exists
    count = 0
    async for key in api.redis.scan_iter(match=keys.token("*")):
        count += (await api.redis.get(key)) == b"race"
    winner = next(r for r in responses if r.status_code == 201).json()
    assert count == (1 if "token" in winner else 0)


# --- GET /v1/accounts/{handle} ----------------------------------------------------------------
async def test_anyone_can_look_up_an_account_without_its_contact_points(api: Api) -> None:
    await api.create("mia", display_name="Mia", email="mia@example.com", phone="+15551234567")
    response = await api.call("GET", "/v1/accounts/mia")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "handle", "kind", "display_name", "followers_count", "active"}
    assert body["handle"] == "mia"
    assert body["display_name"] == "Mia"
    assert body["followers_count"] == 0


async def test_followers_count_reads_the_follower_graph(api: Api) -> None:
    """The count comes from the timeline worker's projection (keys.followers and externals)."""
    await api.create(TEAM, "team")
    await api.redis.hset(keys.followers(0, TEAM), mapping={"a": "app", "b": "app,email"})
    await api.redis.hset(keys.external_followers(0, TEAM), mapping={"c": "app"})
    body = (await api.call("GET", f"/v1/accounts/{TEAM}")).json()
    assert body["followers_count"] == 3


async def test_unknown_account_is_404(api: Api) -> None:
    assert_error(await api.call("GET", "/v1/accounts/nobody"), 404, "no_such_account")


# --- /v1/me -----------------------------------------------------------------------------------
async def test_me_shows_contact_points_and_no_secrets(api: Api) -> None:
    token = await api.person(
        "mia", email="mia@example.com", phone="+15551234567", webhook_url="https://h.example/x"
    )
    body = (await api.call("GET", "/v1/me", token=token)).json()
    assert body["email"] == "mia@example.com"
    assert body["phone"] == "+15551234567"
    assert body["webhook_url"] == "https://h.example/x"
    assert body["followers_count"] == 0
    for secret in ("token", "token_hash", "webhook_secret"):
        assert secret not in body


async def test_patch_me_sets_and_clears_contact_points(api: Api, cast: Cast) -> None:
    before = await api.log_length()
    response = await api.call(
        "PATCH",
        "/v1/me",
        token=cast.member,
        json={"display_name": "Mia W.", "email": "mia@example.com", "phone": "+15551234567"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["display_name"] == "Mia W."
    assert body["email"] == "mia@example.com"
    assert body["phone"] == "+15551234567"
    assert await api.log_length() == before + 1
    changed = (await api.events())[-1]
    assert isinstance(changed, events.ContactPointsChanged)
    assert changed.handle == "mia"
    assert changed.actor == "mia"
    assert changed.display_name == "Mia W."
    assert changed.email == "mia@example.com"
    assert changed.phone == "+15551234567"

    # omitted fields stay, null clears; the change is visible at once (no stale token cache)
    cleared = await api.call("PATCH", "/v1/me", token=cast.member, json={"phone": None})
    assert cleared.status_code == 200
    me = (await api.call("GET", "/v1/me", token=cast.member)).json()
    assert me["phone"] is None
    assert me["email"] == "mia@example.com"
    assert me["display_name"] == "Mia W."
    last = (await api.events())[-1]
    assert isinstance(last, events.ContactPointsChanged)
    assert last.phone is None
    assert last.email == "mia@example.com"


async def test_patch_me_webhook_secret_only_the_first_time(api: Api, cast: Cast) -> None:
    first = await api.call(
        "PATCH", "/v1/me", token=cast.service, json={"webhook_url": "https://a.example/hook"}
    )
    assert first.status_code == 200, first.text
    secret = first.json()["webhook_secret"]
    assert secret.startswith("whsec_")
    changed = (await api.events())[-1]
    assert isinstance(changed, events.ContactPointsChanged)
    assert changed.webhook_secret == secret

    second = await api.call(
        "PATCH", "/v1/me", token=cast.service, json={"webhook_url": "https://b.example/hook"}
    )
    assert second.status_code == 200
    assert "webhook_secret" not in second.json()
    assert second.json()["webhook_url"] == "https://b.example/hook"
    again = (await api.events())[-1]
    assert isinstance(again, events.ContactPointsChanged)
    assert again.webhook_secret == secret  # the secret survives a URL change


@pytest.mark.parametrize("who", ["admin", "member", "external", "service"])
async def test_everyone_with_a_token_may_patch_themselves(api: Api, cast: Cast, who: str) -> None:
    token = cast.by_name(who)
    response = await api.call("PATCH", "/v1/me", token=token, json={"display_name": "Renamed"})
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == "Renamed"
    assert response.json()["role"] == {"service": None}.get(who, who)  # role never changes


async def test_patch_cannot_touch_another_account(api: Api, cast: Cast) -> None:
    await api.call("PATCH", "/v1/me", token=cast.member, json={"email": "mia@example.com"})
    admin = (await api.call("GET", "/v1/me", token=cast.admin)).json()
    assert admin["email"] is None


# --- posters ----------------------------------------------------------------------------------
async def test_grant_and_revoke_poster(api: Api, cast: Cast) -> None:
    path = f"/v1/accounts/{TEAM}/posters/mia"
    post = {"text": "Status: investigating", "as": TEAM}
    assert_error(await api.call("POST", "/v1/posts", token=cast.member, json=post), 403)

    before = await api.log_length()
    granted = await api.call("PUT", path, token=cast.admin)
    assert granted.status_code == 204
    assert granted.content == b""
    event = (await api.events())[-1]
    assert isinstance(event, events.PosterGranted)
    assert (event.account, event.poster, event.actor) == (TEAM, "mia", "admin")
    assert await api.log_length() == before + 1

    # granting twice changes nothing
    assert (await api.call("PUT", path, token=cast.admin)).status_code == 204
    assert await api.log_length() == before + 1

    published = await api.call("POST", "/v1/posts", token=cast.member, json=post)
    assert published.status_code == 202, published.text
    assert published.json()["as_account"] == TEAM
    assert published.json()["author"] == "mia"
    # another person is still not a poster
    assert_error(
        await api.call("POST", "/v1/posts", token=cast.external, json=post), 403, "not_a_poster"
    )

    revoked = await api.call("DELETE", path, token=cast.admin)
    assert revoked.status_code == 204
    event = (await api.events())[-1]
    assert isinstance(event, events.PosterRevoked)
    assert (event.account, event.poster) == (TEAM, "mia")
    length = await api.log_length()
    assert (await api.call("DELETE", path, token=cast.admin)).status_code == 204
    assert await api.log_length() == length  # revoking twice changes nothing

    before_refusal = await api.snapshot()
    refused = await api.call("POST", "/v1/posts", token=cast.member, json=post)
    assert_error(refused, 403, "not_a_poster", field="as")
    assert await api.snapshot() == before_refusal


async def test_a_person_may_post_as_a_service_they_are_a_poster_of(api: Api, cast: Cast) -> None:
    assert (
        await api.call("PUT", "/v1/accounts/svc/posters/eve", token=cast.admin)
    ).status_code == 204
    response = await api.call(
        "POST", "/v1/posts", token=cast.external, json={"text": "deploy done", "as": "svc"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["as_account"] == "svc"
    assert response.json()["visibility"] == "public"  # an external author posts publicly
