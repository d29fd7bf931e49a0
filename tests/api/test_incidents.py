"""Incidents and components over HTTP: each update is a post in the incident's thread,
appended with the incident's events in one step; who may open, update and set components;
visibility; resolving and reopening; refusals that change nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.conftest import ADMIN_TOKEN, TEAM, Api, Cast, assert_error
from muster import events

pytestmark = pytest.mark.anyio


async def poster(api: Api, cast: Cast) -> str:
    """mia, a poster of the team, with the team's component `API`."""
    await api.ok("PUT", f"/v1/accounts/{TEAM}/posters/mia", 204, token=ADMIN_TOKEN)
    await api.ok(
        "PUT",
        f"/v1/accounts/{TEAM}/components/API",
        token=cast.member,
        json={"status": "operational", "description": "REST API"},
    )
    return cast.member


async def open_one(api: Api, token: str, **fields: Any) -> dict[str, Any]:
    body = {
        "as": TEAM,
        "title": "Elevated API errors",
        "status": "investigating",
        "impact": "major",
        "text": "Some requests fail.",
        **fields,
    }
    found: dict[str, Any] = await api.ok("POST", "/v1/incidents", 201, token=token, json=body)
    return found


async def refused(api: Api, method: str, path: str, status: int, code: str, **kw: Any) -> None:
    before = await api.snapshot()
    assert_error(await api.call(method, path, **kw), status, code)
    assert await api.snapshot() == before, f"{method} {path} changed the database"


async def test_open_update_resolve_reopen(api: Api, cast: Cast) -> None:
    token = await poster(api, cast)
    incident = await open_one(api, token, components={"API": "partial_outage"})
    iid = incident["id"]
    assert incident["account"] == TEAM
    assert incident["status"] == "investigating"
    assert incident["impact"] == "major"
    assert incident["visibility"] == "public"
    assert incident["resolved_at"] is None
    assert incident["components"] == {"API": "partial_outage"}
    (first,) = incident["updates"]
    assert first["id"] == iid
    assert first["in_reply_to"] is None
    assert first["severity"] == "warning"  # major → warning
    assert first["message"] == "Some requests fail."
    assert first["text"] == "Elevated API errors — Investigating: Some requests fail."

    # the opening is one step: the incident, the component and the post, in one partition
    log = await api.events()
    opened = [e for e in log if isinstance(e, events.IncidentOpened)]
    assert [o.incident for o in opened] == [iid]
    (post,) = [e for e in log if isinstance(e, events.PostPublished)]
    assert (post.id, post.as_account, post.visibility) == (iid, TEAM, "public")
    assert post.components == ("API",)
    change = [e for e in log if isinstance(e, events.ComponentChanged)][-1]
    assert (change.name, change.status, change.incident) == ("API", "partial_outage", iid)
    (api_component,) = await api.ok("GET", f"/v1/accounts/{TEAM}/components")
    assert api_component["status"] == "partial_outage"
    assert api_component["description"] == "REST API"

    update = await api.ok(
        "POST",
        f"/v1/incidents/{iid}/updates",
        202,
        token=token,
        json={"status": "identified", "text": "A bad deploy.", "impact": "critical"},
    )
    assert update["in_reply_to"] == iid
    assert update["severity"] == "critical"
    assert update["status"] == "identified"
    resolved = await api.ok(
        "POST",
        f"/v1/incidents/{iid}/updates",
        202,
        token=token,
        json={"status": "resolved", "text": "Rolled back.", "components": {"API": "operational"}},
    )
    assert resolved["impact"] == "critical"  # kept
    got = await api.ok("GET", f"/v1/incidents/{iid}")
    assert got["status"] == "resolved"
    resolved_at = got["resolved_at"]
    assert resolved_at == resolved["created_at"]
    assert [u["status"] for u in got["updates"]] == ["investigating", "identified", "resolved"]
    assert got["components"] == {"API": "operational"}

    # a note after the resolution keeps it resolved; a status that says so reopens it
    await api.ok(
        "POST",
        f"/v1/incidents/{iid}/updates",
        202,
        token=token,
        json={"status": "resolved", "text": "Post-mortem to follow."},
    )
    assert (await api.ok("GET", f"/v1/incidents/{iid}"))["resolved_at"] == resolved_at
    assert await api.ok("GET", f"/v1/accounts/{TEAM}/incidents?state=open") == []
    await api.ok(
        "POST",
        f"/v1/incidents/{iid}/updates",
        202,
        token=token,
        json={"status": "investigating", "text": "It is back."},
    )
    again = await api.ok("GET", f"/v1/incidents/{iid}")
    assert (again["status"], again["resolved_at"]) == ("investigating", None)
    (listed,) = await api.ok("GET", f"/v1/accounts/{TEAM}/incidents?state=open")
    assert listed["id"] == iid


async def test_severity_follows_impact_unless_given(api: Api, cast: Cast) -> None:
    token = await poster(api, cast)
    expected = {"critical": "critical", "major": "warning", "minor": "info", "none": "info"}
    for impact, severity in expected.items():
        found = await open_one(api, token, impact=impact)
        assert found["updates"][0]["severity"] == severity
    chosen = await open_one(api, token, impact="minor", severity="critical")
    assert chosen["updates"][0]["severity"] == "critical"


async def test_listing_pages_newest_first_by_state(api: Api, cast: Cast) -> None:
    token = await poster(api, cast)
    ids = [(await open_one(api, token, title=f"incident {i}"))["id"] for i in range(5)]
    await api.ok(
        "POST",
        f"/v1/incidents/{ids[1]}/updates",
        202,
        token=token,
        json={"status": "resolved", "text": "done"},
    )
    every = await api.ok("GET", f"/v1/accounts/{TEAM}/incidents")
    assert [i["id"] for i in every] == ids[::-1]
    open_ = await api.ok("GET", f"/v1/accounts/{TEAM}/incidents", params={"state": "open"})
    assert [i["id"] for i in open_] == [ids[4], ids[3], ids[2], ids[0]]
    resolved = await api.ok("GET", f"/v1/accounts/{TEAM}/incidents", params={"state": "resolved"})
    assert [i["id"] for i in resolved] == [ids[1]]
    page = await api.ok(
        "GET", f"/v1/accounts/{TEAM}/incidents", params={"limit": 2, "before": ids[3]}
    )
    assert [i["id"] for i in page] == [ids[2], ids[1]]


async def test_internal_incidents_are_for_staff_only(api: Api, cast: Cast) -> None:
    token = await poster(api, cast)
    internal = await open_one(api, token, visibility="internal", title="db replica lag")
    public = await open_one(api, token)
    assert internal["updates"][0]["visibility"] == "internal"
    assert_error(await api.call("GET", f"/v1/incidents/{internal['id']}"), 404, "no_such_incident")
    assert_error(
        await api.call("GET", f"/v1/incidents/{internal['id']}", token=cast.external),
        404,
        "no_such_incident",
    )
    assert (await api.ok("GET", f"/v1/incidents/{internal['id']}", token=cast.member))["id"]
    anonymous = await api.ok("GET", f"/v1/accounts/{TEAM}/incidents")
    assert [i["id"] for i in anonymous] == [public["id"]]
    staff = await api.ok("GET", f"/v1/accounts/{TEAM}/incidents", token=cast.member)
    assert [i["id"] for i in staff] == [public["id"], internal["id"]]
    # its updates stay internal, and an external poster cannot even find it
    await api.ok(
        "POST",
        f"/v1/incidents/{internal['id']}/updates",
        202,
        token=token,
        json={"status": "monitoring", "text": "lag back to normal"},
    )
    posts = [e for e in await api.events() if isinstance(e, events.PostPublished)]
    assert {p.visibility for p in posts if p.text.startswith("db replica lag")} == {"internal"}


async def test_a_service_opens_its_own_incidents(api: Api, cast: Cast) -> None:
    await api.ok(
        "PUT",
        "/v1/accounts/svc/components/Workers",
        token=cast.service,
        json={"status": "operational"},
    )
    found = await api.ok(
        "POST",
        "/v1/incidents",
        201,
        token=cast.service,
        json={
            "title": "Queue backlog",
            "status": "identified",
            "impact": "minor",
            "text": "Jobs are delayed.",
            "components": {"Workers": "degraded_performance"},
        },
    )
    assert found["account"] == "svc"
    assert found["components"] == {"Workers": "degraded_performance"}


async def test_components_keep_their_order_and_description(api: Api, cast: Cast) -> None:
    token = await poster(api, cast)
    for name in ("Web", "Zebra", "Billing"):
        await api.ok(
            "PUT",
            f"/v1/accounts/{TEAM}/components/{name}",
            token=token,
            json={"status": "operational"},
        )
    changed = await api.ok(
        "PUT",
        f"/v1/accounts/{TEAM}/components/API",
        token=ADMIN_TOKEN,
        json={"status": "under_maintenance"},
    )
    assert changed["description"] == "REST API"  # kept when omitted
    listed = await api.ok("GET", f"/v1/accounts/{TEAM}/components")
    assert [c["name"] for c in listed] == ["API", "Web", "Zebra", "Billing"]
    assert listed[0]["status"] == "under_maintenance"
    # the same state again is no change: nothing appended
    length = await api.log_length()
    await api.ok(
        "PUT", f"/v1/accounts/{TEAM}/components/Web", token=token, json={"status": "operational"}
    )
    assert await api.log_length() == length


async def test_refusals_change_nothing(api: Api, cast: Cast) -> None:
    token = await poster(api, cast)
    incident = await open_one(api, token)
    iid = incident["id"]
    good = {"as": TEAM, "title": "t", "status": "investigating", "impact": "minor", "text": "x"}
    await refused(api, "POST", "/v1/incidents", 401, "missing_token", json=good)
    await refused(api, "POST", "/v1/incidents", 403, "not_a_poster", token=cast.external, json=good)
    await refused(
        api, "POST", "/v1/incidents", 422, "wrong_kind", token=token, json={**good, "as": "mia"}
    )
    await refused(
        api,
        "POST",
        "/v1/incidents",
        404,
        "no_such_account",
        token=token,
        json={**good, "as": "nope"},
    )
    await refused(
        api,
        "POST",
        "/v1/incidents",
        422,
        "unknown_component",
        token=token,
        json={**good, "components": {"Nope": "major_outage"}},
    )
    await refused(
        api,
        "POST",
        "/v1/incidents",
        422,
        "invalid_field",
        token=token,
        json={**good, "impact": "huge"},
    )
    await refused(
        api, "POST", "/v1/incidents", 422, "text_empty", token=token, json={**good, "title": "  "}
    )
    await refused(
        api,
        "POST",
        "/v1/incidents",
        422,
        "text_too_long",
        token=token,
        json={**good, "text": "x" * 501},
    )
    update = {"status": "monitoring", "text": "ok"}
    await refused(
        api,
        "POST",
        f"/v1/incidents/{iid}/updates",
        403,
        "not_a_poster",
        token=cast.external,
        json=update,
    )
    await refused(
        api,
        "POST",
        "/v1/incidents/123456789012345678/updates",
        404,
        "no_such_incident",
        token=token,
        json=update,
    )
    await refused(
        api,
        "POST",
        f"/v1/incidents/{iid}/updates",
        422,
        "invalid_field",
        token=token,
        json={"status": "fixed", "text": "ok"},
    )
    await refused(
        api,
        "PUT",
        f"/v1/accounts/{TEAM}/components/API",
        403,
        "not_allowed",
        token=cast.external,
        json={"status": "major_outage"},
    )
    await refused(
        api,
        "PUT",
        f"/v1/accounts/{TEAM}/components/a%7Cb",
        422,
        "invalid_field",
        token=token,
        json={"status": "major_outage"},
    )
    await refused(
        api,
        "PUT",
        "/v1/accounts/mia/components/API",
        422,
        "wrong_kind",
        token=ADMIN_TOKEN,
        json={"status": "major_outage"},
    )
    assert_error(await api.call("GET", "/v1/incidents/abc"), 404, "no_such_incident")


async def test_posters_and_admins_set_the_page_look_and_only_admins_deactivate(
    api: Api, cast: Cast
) -> None:
    token = await poster(api, cast)
    look = {"display_name": "Operations", "logo_url": "https://example.com/l.png"}
    changed = await api.ok("PATCH", f"/v1/accounts/{TEAM}", token=token, json=look)
    assert (changed["display_name"], changed["logo_url"]) == ("Operations", look["logo_url"])
    assert changed["accent_color"] is None
    changed = await api.ok(
        "PATCH", f"/v1/accounts/{TEAM}", token=ADMIN_TOKEN, json={"accent_color": "#0a66c2"}
    )
    assert (changed["logo_url"], changed["accent_color"]) == (look["logo_url"], "#0a66c2")
    cleared = await api.ok("PATCH", f"/v1/accounts/{TEAM}", token=token, json={"logo_url": None})
    assert (cleared["logo_url"], cleared["accent_color"]) == (None, "#0a66c2")
    kinds = [type(e).__name__ for e in await api.events()][-4:]
    assert kinds == [
        "ContactPointsChanged",
        "StatusPageChanged",
        "StatusPageChanged",
        "StatusPageChanged",
    ]
    await refused(
        api, "PATCH", f"/v1/accounts/{TEAM}", 403, "admin_only", token=token, json={"active": False}
    )
    await refused(
        api,
        "PATCH",
        f"/v1/accounts/{TEAM}",
        403,
        "not_allowed",
        token=cast.external,
        json={"display_name": "Pwned"},
    )
    await refused(
        api,
        "PATCH",
        f"/v1/accounts/{TEAM}",
        422,
        "invalid_url",
        token=token,
        json={"logo_url": "http://example.com/l.png"},
    )
    await refused(
        api,
        "PATCH",
        f"/v1/accounts/{TEAM}",
        422,
        "invalid_field",
        token=token,
        json={"accent_color": "red"},
    )


async def test_an_idempotency_key_opens_and_updates_once(
    api: Api, cast: Cast, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A monitoring system that retries after a timeout opens one incident, not two: the
    same key and body answer as the first time and write nothing; another body is 409."""
    token = await poster(api, cast)
    key = {"Idempotency-Key": "alert-4711"}
    body = {"as": TEAM, "title": "Disk full", "status": "investigating", "impact": "minor",
            "text": "db-2 is at 99%."}  # fmt: skip
    first = await api.ok("POST", "/v1/incidents", 201, token=token, json=body, headers=key)
    logged = await api.log_length()
    before = await api.snapshot()
    again = await api.ok("POST", "/v1/incidents", 201, token=token, json=body, headers=key)
    assert again == first
    assert await api.log_length() == logged
    assert await api.snapshot() == before
    other = {**body, "impact": "major"}
    await refused(api, "POST", "/v1/incidents", 409, "idempotency_key_reused", token=token,
                  json=other, headers=key)  # fmt: skip
    assert [i["id"] for i in await api.ok("GET", f"/v1/accounts/{TEAM}/incidents")] == [first["id"]]

    updates = f"/v1/incidents/{first['id']}/updates"
    update = {"status": "identified", "text": "Old logs; rotating."}
    once = await api.ok(
        "POST", updates, 202, token=token, json=update, headers=key | {"Idempotency-Key": "u1"}
    )
    twice = await api.ok(
        "POST", updates, 202, token=token, json=update, headers={"Idempotency-Key": "u1"}
    )
    assert once == twice
    incident = await api.ok("GET", f"/v1/incidents/{first['id']}")
    assert [u["id"] for u in incident["updates"]] == [first["id"], once["id"]]
    # a key belongs to its route too: the open's key on an update is another body
    await refused(api, "POST", updates, 409, "idempotency_key_reused", token=token,
                  json=update, headers=key)  # fmt: skip

    # the process dies after the MULTI, before the caller's record: the receipt answers
    from muster.api import publishing

    async def die(self: publishing.Claim, response: bytes) -> None:
        raise RuntimeError("the api process died here")

    died_key = {"Idempotency-Key": "died"}
    with monkeypatch.context() as patched:
        patched.setattr(publishing.Claim, "done", die)
        with pytest.raises(RuntimeError):
            await api.call("POST", updates, token=token, json=update, headers=died_key)
    logged = await api.log_length()
    retried = await api.ok("POST", updates, 202, token=token, json=update, headers=died_key)
    assert await api.log_length() == logged
    incident = await api.ok("GET", f"/v1/incidents/{first['id']}")
    assert [u["id"] for u in incident["updates"]][-1] == retried["id"]
    assert len(incident["updates"]) == 3


async def test_a_refused_write_leaves_its_key_free(api: Api, cast: Cast) -> None:
    token = await poster(api, cast)
    key = {"Idempotency-Key": "k"}
    body = {"as": TEAM, "title": "x", "status": "investigating", "impact": "minor", "text": "y",
            "components": {"Nope": "major_outage"}}  # fmt: skip
    await refused(api, "POST", "/v1/incidents", 422, "unknown_component", token=token,
                  json=body, headers=key)  # fmt: skip
    del body["components"]
    await api.ok("POST", "/v1/incidents", 201, token=token, json=body, headers=key)
    await refused(api, "POST", "/v1/incidents", 422, "invalid_idempotency_key", token=token,
                  json=body, headers={"Idempotency-Key": ""})  # fmt: skip
    await refused(api, "POST", "/v1/incidents", 422, "invalid_parameter", token=token,
                  json=body, headers={"Idempotency-Key": "k" * 256})  # fmt: skip
