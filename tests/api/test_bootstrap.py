"""MUSTER_ADMIN_TOKEN: at start-up the api makes sure `admin` exists and that this is its token."""

from __future__ import annotations

import asyncio
import hashlib

import msgspec
import pytest

from api.conftest import ADMIN_TOKEN, Api, OpenApi, assert_error, snapshot
from muster import events, keys
from muster.settings import Settings

pytestmark = pytest.mark.anyio

OTHER_TOKEN = "rot-7HqL2mV9xK4pW8nT3cR6zB1yF5dJ0sGa"


async def test_first_start_creates_the_admin(api: Api) -> None:
    me = await api.call("GET", "/v1/me", token=ADMIN_TOKEN)
    assert me.status_code == 200
    body = me.json()
    assert (body["handle"], body["kind"], body["role"]) == ("admin", "person", "admin")
    [created] = await api.events()
    assert isinstance(created, events.AccountCreated)
    assert created.handle == "admin"
    assert created.role == "admin"
    assert created.actor == "system"
    assert created.token_hash == hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()


async def test_without_a_token_nothing_is_created(settings: Settings, open_api: OpenApi) -> None:
    assert settings.admin_token is None
    async with open_api(settings) as api:
        assert await api.log_length() == 0
        assert_error(await api.call("GET", "/v1/accounts/admin"), 404)
        assert_error(await api.call("GET", "/v1/me", token=ADMIN_TOKEN), 401, "unknown_token")


async def test_restart_with_the_same_token_changes_nothing(
    api_settings: Settings, open_api: OpenApi
) -> None:
    async with open_api(api_settings) as api:
        admin_id = (await api.call("GET", "/v1/me", token=ADMIN_TOKEN)).json()["id"]
        before = {
            k: v for k, v in (await api.snapshot()).items() if k != keys.NODE_COUNTER.encode()
        }
    async with open_api(api_settings) as api:
        after = {k: v for k, v in (await api.snapshot()).items() if k != keys.NODE_COUNTER.encode()}
        assert after == before
        me = await api.call("GET", "/v1/me", token=ADMIN_TOKEN)
        assert me.json()["id"] == admin_id


async def test_restart_with_another_token_replaces_it(
    api_settings: Settings, open_api: OpenApi
) -> None:
    async with open_api(api_settings) as api:
        admin_id = (await api.call("GET", "/v1/me", token=ADMIN_TOKEN)).json()["id"]
        member = await api.person("mia")
        length = await api.log_length()

    rotated = msgspec.structs.replace(api_settings, admin_token=OTHER_TOKEN)
    async with open_api(rotated) as api:
        assert_error(await api.call("GET", "/v1/me", token=ADMIN_TOKEN), 401, "unknown_token")
        assert_error(
            await api.call(
                "POST", "/v1/accounts", token=ADMIN_TOKEN, json={"handle": "x", "kind": "team"}
            ),
            401,
        )
        me = await api.call("GET", "/v1/me", token=OTHER_TOKEN)
        assert me.status_code == 200
        assert me.json()["id"] == admin_id  # the same account, a new token
        assert me.json()["role"] == "admin"
        await api.create("newbie", token=OTHER_TOKEN)
        # other accounts' tokens are untouched
        assert (await api.call("GET", "/v1/me", token=member)).status_code == 200

        reset = (await api.events())[length]
        assert isinstance(reset, events.AccountTokenReset)
        assert reset.handle == "admin"
        assert reset.actor == "system"
        assert reset.token_hash == hashlib.sha256(OTHER_TOKEN.encode()).hexdigest()
        old_hash = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
        assert await api.redis.get(keys.token(old_hash)) is None

    # and back again: the first token works once more, the second no longer does
    async with open_api(api_settings) as api:
        assert (await api.call("GET", "/v1/me", token=ADMIN_TOKEN)).status_code == 200
        assert_error(await api.call("GET", "/v1/me", token=OTHER_TOKEN), 401)


async def test_the_bootstrap_admin_is_a_member_for_enrolments(api: Api) -> None:
    await api.create("ops", "team")
    response = await api.call(
        "PUT",
        "/v1/accounts/ops/enrolments",
        token=ADMIN_TOKEN,
        json={"followers": "all_members"},
    )
    assert response.status_code == 202
    assert response.json()["followers"] == 1
    await api.expand(response.json()["id"])
    assert "ops" in await api.follows("admin")


async def test_two_processes_starting_at_once_create_one_admin(
    api_settings: Settings, open_api: OpenApi
) -> None:
    """`muster up` may start several api processes against an empty database together."""

    async def start() -> None:
        async with open_api(api_settings) as api:
            assert (await api.call("GET", "/v1/me", token=ADMIN_TOKEN)).status_code == 200

    await asyncio.wait_for(asyncio.gather(*[start() for _ in range(4)]), timeout=30)
    async with open_api(api_settings) as api:
        created = [e for e in await api.events() if isinstance(e, events.AccountCreated)]
        assert [e.handle for e in created] == ["admin"]
        assert not [e for e in await api.events() if isinstance(e, events.AccountTokenReset)]
        assert (await snapshot(api.redis)).get(keys.account(0, "admin").encode())
