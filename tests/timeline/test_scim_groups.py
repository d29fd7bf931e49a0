"""Directory sync end to end: a SCIM group maps to a team's enrolment, kept current by the
PATCH shapes Okta and Entra ID send, and the people it enrols receive the team's posts."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from muster import events, keys
from muster.settings import Settings
from timeline.conftest import ADMIN_TOKEN, OpenStack, Stack

pytestmark = pytest.mark.anyio

SCIM_TOKEN = "scim-Lk2xR7pN4tZ9wB6cY1mH5jD0sFgEQ8v3"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


async def scim(s: Stack, method: str, path: str, body: Any, status: int = 200) -> Any:
    return await s.ok(
        method,
        f"/scim/v2{path}",
        status,
        token=SCIM_TOKEN,
        content=msgspec.json.encode(body),
        headers={"Content-Type": "application/scim+json"},
    )


async def patch_members(s: Stack, *operations: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = await scim(
        s, "PATCH", "/Groups/on_call", {"schemas": [PATCH], "Operations": list(operations)}
    )
    return body


async def follows(s: Stack, token: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await s.ok("GET", "/v1/me/follows", token=token)
    return found


async def test_a_group_enrols_its_members_in_the_team_and_they_get_its_posts(
    timeline_settings: Settings, open_stack: OpenStack
) -> None:
    settings = msgspec.structs.replace(timeline_settings, scim_token=SCIM_TOKEN)
    async with open_stack(settings) as s:
        await s.team("on_call", "admin")
        tokens = {}
        for name in ("ana", "bo"):
            user: dict[str, Any] = {"schemas": [USER], "userName": f"{name}@example.com"}
            user["emails"] = [{"value": f"{name}@example.com", "primary": True}]
            await scim(s, "POST", "/Users", user, 201)
            reset = await s.ok("POST", f"/v1/accounts/{name}/token", token=ADMIN_TOKEN)
            tokens[name] = reset["token"]
        group = {"schemas": [GROUP], "displayName": "On-Call", "members": [{"value": "ana"}]}
        created = await scim(s, "POST", "/Groups", group, 201)
        assert created["id"] == "on_call"
        assert created["displayName"] == "On-Call"
        assert [m["value"] for m in created["members"]] == ["ana"]
        await s.settle()
        mandatory = {"account": "on_call", "channels": ["app", "email"], "mandatory": True}
        assert await follows(s, tokens["ana"]) == [mandatory]
        assert await follows(s, tokens["bo"]) == []

        post = await s.post(ADMIN_TOKEN, "Incident: the VPN is down", as_="on_call")
        await s.settle()
        assert post["id"] in await s.ids("/v1/timelines/home", tokens["ana"])
        assert post["id"] not in await s.ids("/v1/timelines/home", tokens["bo"])
        refused = await s.call("DELETE", "/v1/me/follows/on_call", token=tokens["ana"])
        assert refused.status_code == 403  # enrolled by the directory, with no opt-out

        # Okta: add with a value list, remove with a filter path
        await patch_members(s, {"op": "add", "path": "members", "value": [{"value": "bo"}]})
        await s.settle()
        assert await follows(s, tokens["bo"]) == [mandatory]
        await patch_members(s, {"op": "remove", "path": 'members[value eq "ana"]'})
        await s.settle()
        assert await follows(s, tokens["ana"]) == []
        # Entra ID: capitalised ops, remove with a value list, then replace the members
        await patch_members(s, {"op": "Remove", "path": "members", "value": [{"value": "bo"}]})
        await s.settle()
        assert await follows(s, tokens["bo"]) == []
        both = [{"value": "ana"}, {"value": "bo"}]
        replaced = await patch_members(s, {"op": "Replace", "path": "members", "value": both})
        assert [m["value"] for m in replaced["members"]] == ["ana", "bo"]
        await s.settle()
        for name in ("ana", "bo"):
            assert await follows(s, tokens[name]) == [mandatory]
        read = await scim(s, "GET", "/Groups/on_call", None)
        assert [m["value"] for m in read["members"]] == ["ana", "bo"]

        # Removed by the directory, the follow goes; the unfollow names the directory
        await scim(s, "DELETE", "/Groups/on_call", None, 204)
        await s.settle()
        for name in ("ana", "bo"):
            assert await follows(s, tokens[name]) == []
        unfollows = [
            e
            for p in range(settings.partitions)
            for e in await events_in(s, p)
            if isinstance(e, events.AccountUnfollowed)
        ]
        assert {e.actor for e in unfollows} == {"scim-directory"}
        gone = await s.call("GET", "/scim/v2/Groups/on_call", token=SCIM_TOKEN)
        assert gone.status_code == 404


async def test_the_teams_enrolment_rule_sets_the_channels(
    timeline_settings: Settings, open_stack: OpenStack
) -> None:
    settings = msgspec.structs.replace(timeline_settings, scim_token=SCIM_TOKEN)
    async with open_stack(settings) as s:
        await s.team("news")
        rule = {"followers": "all_members", "channels": ["sms"], "mandatory": False}
        await s.ok("PUT", "/v1/accounts/news/enrolments", 202, token=ADMIN_TOKEN, json=rule)
        await scim(s, "POST", "/Users", {"schemas": [USER], "userName": "cy@example.com"}, 201)
        group = {"schemas": [GROUP], "displayName": "news", "members": [{"value": "cy"}]}
        await scim(s, "POST", "/Groups", group, 201)
        enrolled = [
            e
            for p in range(settings.partitions)
            for e in await events_in(s, p)
            if isinstance(e, events.FollowersEnrolled)
        ]
        assert [(e.followers, e.channels, e.mandatory) for e in enrolled] == [
            (("cy",), ("app", "sms"), False)
        ]


async def events_in(s: Stack, partition: int) -> list[events.AnyEvent]:
    entries: Any = await s.redis.xrange(keys.events(partition))
    return [events.decode(entry[events.STREAM_FIELD]) for _, entry in entries]
