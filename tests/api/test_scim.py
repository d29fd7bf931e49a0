"""SCIM 2.0 directory sync (/scim/v2), with our own requests: the shapes Okta and Entra ID send,
the mapping to people and teams, and SCIM error bodies for every refusal (RFC 7644 §3.12).
The independent conformance check is tests/api/test_scim_conformance.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from api.conftest import Api, OpenApi
from muster import events
from muster.ops.replay import ReplayRequest, replay
from muster.projections import families as projections
from muster.settings import Settings

SCIM_TOKEN = "scim-Lk2xR7pN4tZ9wB6cY1mH5jD0sFgEQ8v3"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"

pytestmark = pytest.mark.anyio


@pytest.fixture
def scim_settings(api_settings: Settings) -> Settings:
    return msgspec.structs.replace(api_settings, scim_token=SCIM_TOKEN)


@pytest.fixture
async def sapi(scim_settings: Settings, open_api: OpenApi) -> AsyncIterator[Api]:
    async with open_api(scim_settings) as opened:
        yield opened


async def scim(
    api: Api,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = SCIM_TOKEN,
    **params: Any,
) -> httpx.Response:
    headers = {"Content-Type": "application/scim+json"}
    content = (
        None if body is None else (body if isinstance(body, bytes) else msgspec.json.encode(body))
    )
    return await api.call(
        method,
        f"/scim/v2{path}",
        token=token,
        content=content,
        headers=headers,
        params=params or None,
    )


def scim_error(
    response: httpx.Response, status: int, scim_type: str | None = None
) -> dict[str, Any]:
    """RFC 7644 §3.12: the Error schema, `status` as a string, `scimType` when named."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body: dict[str, Any] = response.json()
    assert body["schemas"] == [ERROR], body
    assert body["status"] == str(status), body
    assert isinstance(body.get("detail"), str), body
    assert body["detail"].strip(), body
    assert set(body) <= {"schemas", "status", "scimType", "detail"}, body
    if scim_type is not None:
        assert body.get("scimType") == scim_type, body
    return body


def okta_user(user_name: str, **extra: Any) -> dict[str, Any]:
    """What Okta sends to create a user (its SCIM 2.0 guide's example)."""
    return {
        "schemas": [USER],
        "userName": user_name,
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [{"primary": True, "value": user_name, "type": "work"}],
        "displayName": "Babs Jensen",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "active": True,
        **extra,
    }


async def test_users_create_read_and_filter(sapi: Api) -> None:
    created = await scim(sapi, "POST", "/Users", okta_user("Barbara.Jensen@example.com"))
    assert created.status_code == 201, created.text
    assert created.headers["content-type"].startswith("application/scim+json")
    body = created.json()
    assert body["id"] == "barbara_jensen"
    assert body["userName"] == "Barbara.Jensen@example.com"
    assert body["active"] is True
    assert body["meta"]["location"].endswith("/scim/v2/Users/barbara_jensen")
    assert created.headers["Location"] == body["meta"]["location"]
    me = (await sapi.call("GET", "/v1/accounts/barbara_jensen")).json()
    assert me["display_name"] == "Babs Jensen"
    assert me["kind"] == "person"

    got = await scim(sapi, "GET", "/Users/barbara_jensen")
    assert got.json()["emails"] == [
        {"value": "Barbara.Jensen@example.com", "type": "work", "primary": True}
    ]
    for query in (
        'userName eq "barbara.jensen@EXAMPLE.com"',
        'externalId eq "00ujl29u0le5T6Aj10h7"',
        'emails.value eq "barbara.jensen@example.com"',
        'emails[value eq "barbara.jensen@example.com"]',
        "active eq true",
        'userName sw "barb" and active eq true',
    ):
        found = await scim(sapi, "GET", "/Users", filter=query)
        assert found.status_code == 200, found.text
        listed = found.json()
        assert listed["schemas"] == [LIST]
        assert listed["totalResults"] == 1, (query, listed)
        assert listed["Resources"][0]["id"] == "barbara_jensen"
    none = (await scim(sapi, "GET", "/Users", filter='userName eq "nobody@example.com"')).json()
    assert none["totalResults"] == 0
    assert none["Resources"] == [] or "Resources" not in none


async def create_user(api: Api, user_name: str, **extra: Any) -> dict[str, Any]:
    response = await scim(
        api, "POST", "/Users", {"schemas": [USER], "userName": user_name, **extra}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_handles_follow_the_rules_and_collisions_are_uniqueness_errors(sapi: Api) -> None:
    assert (await create_user(sapi, "José.Ñúñez+ops@Example.com"))["id"] == "jose_nunez_ops"
    assert (await create_user(sapi, "x" * 40))["id"] == "x" * 30
    before = await sapi.snapshot()
    # the same userName (case-insensitively), and another one that gives the same handle
    for user_name in ("JOSE.NUNEZ+OPS@example.com", "jose.nunez.ops@elsewhere.org", "admin"):
        scim_error(
            await scim(sapi, "POST", "/Users", {"schemas": [USER], "userName": user_name}),
            409,
            "uniqueness",
        )
    scim_error(
        await scim(sapi, "POST", "/Users", {"schemas": [USER], "userName": "@@@"}),
        400,
        "invalidValue",
    )
    assert await sapi.snapshot() == before


async def test_updates_go_through_the_profile_write_path(sapi: Api) -> None:
    await create_user(
        sapi, "kim@example.com", emails=[{"value": "kim@example.com", "primary": True}]
    )
    put = await scim(
        sapi,
        "PUT",
        "/Users/kim",
        {
            "schemas": [USER],
            "userName": "kim@example.com",
            "name": {"givenName": "Kim", "familyName": "Lee"},
            "emails": [
                {"value": "old@example.com"},
                {"value": "kim.lee@example.com", "primary": True},
            ],
        },
    )
    assert put.status_code == 200, put.text
    me = (await sapi.call("GET", "/v1/accounts/kim")).json()
    assert me["display_name"] == "Kim Lee"
    changed = [e for e in await sapi.events() if isinstance(e, events.ContactPointsChanged)]
    assert changed[-1].email == "kim.lee@example.com"
    assert changed[-1].actor == "scim-directory"
    # A PATCH that changes nothing Muster keeps appends nothing
    length = await sapi.log_length()
    same = {
        "schemas": [PATCH],
        "Operations": [{"op": "replace", "path": "name.givenName", "value": "Kim"}],
    }
    assert (await scim(sapi, "PATCH", "/Users/kim", same)).status_code == 200
    assert await sapi.log_length() == length


async def test_entra_id_patch_shapes(sapi: Api) -> None:
    """Entra ID: capitalised ops, a `work` email path, a value map without path."""
    await create_user(
        sapi,
        "ana@example.com",
        emails=[{"value": "ana@example.com", "type": "work", "primary": True}],
    )
    patch = {
        "schemas": [PATCH],
        "Operations": [
            {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "ana.b@example.com"},
            {"op": "Add", "path": "displayName", "value": "Ana B"},
            {"op": "Replace", "value": {"name.familyName": "B", "name.givenName": "Ana"}},
            {
                "op": "Add",
                "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                "value": "Ops",
            },
        ],
    }
    response = await scim(sapi, "PATCH", "/Users/ana", patch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["emails"] == [{"value": "ana.b@example.com", "type": "work", "primary": True}]
    assert body["name"] == {"givenName": "Ana", "familyName": "B"}
    account = (await sapi.call("GET", "/v1/accounts/ana")).json()
    assert account["display_name"] == "Ana B"


async def test_refusals_are_scim_errors_and_change_nothing(sapi: Api) -> None:
    await create_user(sapi, "lou@example.com")
    before = await sapi.snapshot()
    bad_patch = {
        "schemas": [PATCH],
        "Operations": [{"op": "jump", "path": "displayName", "value": "x"}],
    }
    cases: list[tuple[str, str, Any, dict[str, str], int, str | None]] = [
        ("POST", "/Users", b"{not json", {}, 400, "invalidSyntax"),
        ("POST", "/Users", b"[1, 2]", {}, 400, "invalidSyntax"),
        (
            "POST",
            "/Users",
            {"schemas": [USER], "userName": "a@b.c", "fooBar": 1},
            {},
            400,
            "invalidSyntax",
        ),
        (
            "POST",
            "/Users",
            {"schemas": ["urn:example:nothing"], "userName": "a@b.c"},
            {},
            400,
            None,
        ),
        ("POST", "/Users", {"schemas": [USER]}, {}, 400, None),
        (
            "POST",
            "/Users",
            {"schemas": [USER], "userName": "q@b.c", "emails": [{"value": "not an address"}]},
            {},
            400,
            "invalidValue",
        ),
        ("PATCH", "/Users/lou", bad_patch, {}, 400, "invalidValue"),
        (
            "PATCH",
            "/Users/lou",
            {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "fooBar", "value": 1}]},
            {},
            400,
            None,
        ),
        (
            "PATCH",
            "/Users/lou",
            {"schemas": [PATCH], "Operations": [{"op": "remove", "path": "userName"}]},
            {},
            400,
            None,
        ),
        (
            "PATCH",
            "/Users/lou",
            {
                "schemas": [PATCH],
                "Operations": [
                    {"op": "replace", "path": 'emails[type eq "home"].value', "value": "nope"}
                ],
            },
            {},
            400,
            "invalidValue",
        ),
        (
            "PUT",
            "/Users/lou",
            {"schemas": [USER], "userName": "admin@example.com", "active": "sometimes"},
            {},
            400,
            "invalidValue",
        ),
        ("GET", "/Users", None, {"filter": 'userName eq "x" and'}, 400, "invalidFilter"),
        ("GET", "/Users", None, {"filter": 'fooBar eq "x"'}, 400, "invalidFilter"),
        ("GET", "/Users", None, {"filter": "userName gt true"}, 400, "invalidFilter"),
        ("GET", "/Users/nobody", None, {}, 404, None),
        ("PUT", "/Users/nobody", {"schemas": [USER], "userName": "n@b.c"}, {}, 404, None),
        ("DELETE", "/Users/nobody", None, {}, 404, None),
        ("GET", "/Nothing", None, {}, 404, None),
        ("GET", "/Schemas/urn:nothing", None, {}, 404, None),
        ("GET", "/ResourceTypes/Nothing", None, {}, 404, None),
        (
            "POST",
            "/Groups",
            {"schemas": [GROUP], "displayName": "no_such_team"},
            {},
            400,
            "invalidValue",
        ),
        ("POST", "/Groups", {"schemas": [GROUP], "displayName": "lou"}, {}, 400, "invalidValue"),
        ("POST", "/Users", b"{" + b'"x":"' + b"y" * (64 * 1024) + b'"}', {}, 413, None),
    ]
    for method, path, body, params, status, scim_type in cases:
        response = await scim(sapi, method, path, body, **params)
        try:
            scim_error(response, status, scim_type)
        except AssertionError as failed:
            raise AssertionError(f"{method} {path} {body!r:.200} {params}") from failed
    assert await sapi.snapshot() == before


async def test_the_directory_token_is_required_and_scim_is_off_without_one(
    sapi: Api, api: Api
) -> None:
    for token in (None, "wrong", SCIM_TOKEN + "x", sapi.admin_token):
        scim_error(await scim(sapi, "GET", "/Users", token=token), 401)
    scim_error(
        await scim(sapi, "POST", "/Users", {"schemas": [USER], "userName": "z@b.c"}, token="wrong"),
        401,
    )
    assert (await scim(sapi, "GET", "/ServiceProviderConfig")).status_code == 200
    # `api` runs without MUSTER_SCIM_TOKEN: SCIM is off
    scim_error(await scim(api, "GET", "/ServiceProviderConfig"), 404)
    scim_error(await scim(api, "GET", "/Users", token=SCIM_TOKEN), 404)


async def token_of(api: Api, handle: str) -> str:
    reset = await api.call("POST", f"/v1/accounts/{handle}/token", token=api.admin_token)
    assert reset.status_code == 200, reset.text
    token: str = reset.json()["token"]
    return token


@pytest.mark.parametrize(
    "operation",
    [
        pytest.param({"op": "replace", "value": {"active": False}}, id="okta"),
        pytest.param({"op": "Replace", "path": "active", "value": "False"}, id="entra"),
    ],
)
async def test_deactivating_stops_the_persons_token_at_once(
    sapi: Api, operation: dict[str, Any]
) -> None:
    await create_user(sapi, "dee@example.com")
    token = await token_of(sapi, "dee")
    assert (await sapi.call("GET", "/v1/me", token=token)).status_code == 200
    response = await scim(
        sapi, "PATCH", "/Users/dee", {"schemas": [PATCH], "Operations": [operation]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False
    assert (await sapi.call("GET", "/v1/me", token=token)).status_code == 401
    assert (await scim(sapi, "GET", "/Users", filter="active eq false")).json()["totalResults"] == 1
    deactivated = [e for e in await sapi.events() if isinstance(e, events.AccountDeactivated)]
    assert [(e.handle, e.actor) for e in deactivated] == [("dee", "scim-directory")]
    back = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": True}]}
    assert (await scim(sapi, "PATCH", "/Users/dee", back)).json()["active"] is True
    assert (await sapi.call("GET", "/v1/me", token=token)).status_code == 200
    # `active` cannot be removed: a person is active or not
    before = await sapi.snapshot()
    remove = {"schemas": [PATCH], "Operations": [{"op": "remove", "path": "active"}]}
    scim_error(await scim(sapi, "PATCH", "/Users/dee", remove), 400, "mutability")
    assert await sapi.snapshot() == before


async def test_delete_deactivates_and_the_handle_is_never_reused(sapi: Api) -> None:
    await create_user(sapi, "lee@example.com", active=False)
    assert (await scim(sapi, "GET", "/Users/lee")).json()["active"] is False
    await scim(
        sapi,
        "PATCH",
        "/Users/lee",
        {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": True}]},
    )
    token = await token_of(sapi, "lee")
    assert (await scim(sapi, "DELETE", "/Users/lee")).status_code == 204
    assert (await sapi.call("GET", "/v1/me", token=token)).status_code == 401
    scim_error(await scim(sapi, "GET", "/Users/lee"), 404)
    assert (await scim(sapi, "GET", "/Users")).json()["totalResults"] == 0
    assert (await sapi.call("GET", "/v1/accounts/lee")).status_code == 200  # history stays
    scim_error(
        await scim(sapi, "POST", "/Users", {"schemas": [USER], "userName": "lee@example.com"}),
        409,
        "uniqueness",
    )


async def test_group_refusals(sapi: Api) -> None:
    await sapi.create("ops", "team")
    await create_user(sapi, "max@example.com")
    created = await scim(sapi, "POST", "/Groups", {"schemas": [GROUP], "displayName": "OPS"})
    assert created.status_code == 201, created.text
    before = await sapi.snapshot()
    cases: list[tuple[str, str, Any, int, str | None]] = [
        ("POST", "/Groups", {"schemas": [GROUP], "displayName": "ops"}, 409, "uniqueness"),
        ("PUT", "/Groups/ops", {"schemas": [GROUP], "displayName": "max"}, 400, "mutability"),
        (
            "PATCH",
            "/Groups/ops",
            {
                "schemas": [PATCH],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": "nobody"}]}],
            },
            400,
            "invalidValue",
        ),
        (
            "PATCH",
            "/Groups/ops",
            {
                "schemas": [PATCH],
                "Operations": [
                    {"op": "add", "path": "members", "value": [{"value": "ops", "type": "Group"}]}
                ],
            },
            400,
            "invalidValue",
        ),
        (
            "PATCH",
            "/Groups/ops",
            {
                "schemas": [PATCH],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": "admin"}]}],
            },
            400,
            "invalidValue",
        ),
        ("GET", "/Groups/nothing", None, 404, None),
    ]
    for method, path, body, status, scim_type in cases:
        scim_error(await scim(sapi, method, path, body), status, scim_type)
    assert await sapi.snapshot() == before
    listed = (await scim(sapi, "GET", "/Groups", filter='displayName eq "ops"')).json()
    assert [g["id"] for g in listed["Resources"]] == ["ops"]


@pytest.mark.parametrize("partitions", [1, 3])
async def test_the_directory_state_rebuilt_from_the_log_is_what_the_api_wrote(
    scim_settings: Settings, open_api: OpenApi, partitions: int
) -> None:
    """The directory's users, index, groups and members are write-side state: replay's
    `accounts` family drops them and WriteSide.apply rebuilds them from the events."""
    settings = msgspec.structs.replace(scim_settings, partitions=partitions)
    async with open_api(settings) as api:
        await api.create("ops", "team")
        for name in ("ria", "sam", "tia"):
            await create_user(api, f"{name}@example.com", externalId=f"x-{name}")
        renamed = {"schemas": [USER], "userName": "ria.new@example.com", "externalId": "x-ria"}
        assert (await scim(api, "PUT", "/Users/ria", renamed)).status_code == 200
        group = {
            "schemas": [GROUP],
            "displayName": "Ops",
            "members": [{"value": "ria"}, {"value": "sam"}],
        }
        assert (await scim(api, "POST", "/Groups", group)).status_code == 201
        out = {
            "schemas": [PATCH],
            "Operations": [{"op": "remove", "path": 'members[value eq "sam"]'}],
        }
        assert (await scim(api, "PATCH", "/Groups/ops", out)).status_code == 200
        assert (await scim(api, "DELETE", "/Users/tia")).status_code == 204
        before = await projections.checksum(api.redis, partitions, ("accounts",))
        await replay(api.redis, settings, ReplayRequest(projections=("accounts",)))
        assert await projections.checksum(api.redis, partitions, ("accounts",)) == before
        found = (
            await scim(api, "GET", "/Users", filter='userName eq "ria.new@example.com"')
        ).json()
        assert [u["id"] for u in found["Resources"]] == ["ria"]
        old = (await scim(api, "GET", "/Users", filter='userName eq "ria@example.com"')).json()
        assert old["totalResults"] == 0  # its index entry stays, the record says otherwise
        members = (await scim(api, "GET", "/Groups/ops")).json()["members"]
        assert [m["value"] for m in members] == ["ria"]
