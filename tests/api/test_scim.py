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
    api: Api, method: str, path: str, body: Any = None, *, token: str | None = SCIM_TOKEN, **params: Any
) -> httpx.Response:
    headers = {"Content-Type": "application/scim+json"}
    content = None if body is None else (body if isinstance(body, bytes) else msgspec.json.encode(body))
    return await api.call(
        method, f"/scim/v2{path}", token=token, content=content, headers=headers, params=params or None
    )


def scim_error(response: httpx.Response, status: int, scim_type: str | None = None) -> dict[str, Any]:
    """RFC 7644 §3.12: the Error schema, `status` as a string, `scimType` when named."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body: dict[str, Any] = response.json()
    assert body["schemas"] == [ERROR], body
    assert body["status"] == str(status), body
    assert isinstance(body.get("detail"), str) and body["detail"].strip(), body
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
    assert got.json()["emails"] == [{"value": "Barbara.Jensen@example.com", "type": "work", "primary": True}]
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
