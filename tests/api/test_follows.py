"""Follows (a person's own) and enrolments (an admin's), with the events they append."""

from __future__ import annotations

import pytest

from api.conftest import TEAM, Api, Cast, assert_error
from muster import events

pytestmark = pytest.mark.anyio


async def enrol(api: Api, account: str, **body: object) -> dict[str, object]:
    response = await api.call(
        "PUT", f"/v1/accounts/{account}/enrolments", token=api.settings.admin_token, json=body
    )
    assert response.status_code == 202, response.text
    result: dict[str, object] = response.json()
    await api.expand(str(result["id"]))
    return result


# --- PUT/DELETE/GET /v1/me/follows ----------------------------------------------------------
@pytest.mark.parametrize("body", [None, {}, {"channels": None}])
async def test_follow_without_channels_is_app_only(
    api: Api, cast: Cast, body: dict[str, object] | None
) -> None:
    before = await api.log_length()
    path = f"/v1/me/follows/{TEAM}"
    if body is None:
        response = await api.call("PUT", path, token=cast.member)
    else:
        response = await api.call("PUT", path, token=cast.member, json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"account": TEAM, "channels": ["app"], "mandatory": False}
    assert await api.log_length() == before + 1
    followed = (await api.events())[-1]
    assert isinstance(followed, events.AccountFollowed)
    assert (followed.follower, followed.account, followed.actor) == ("mia", TEAM, "mia")
    assert followed.channels == ("app",)
    assert followed.mandatory is False
    assert await api.follows("mia") == {TEAM: "app|0"}


async def test_follow_again_unchanged_appends_nothing(api: Api, cast: Cast) -> None:
    await api.call("PUT", f"/v1/me/follows/{TEAM}", token=cast.member)
    before = await api.snapshot()
    again = await api.call("PUT", f"/v1/me/follows/{TEAM}", token=cast.member)
    assert again.status_code == 200
    assert again.json()["channels"] == ["app"]
    assert await api.snapshot() == before


async def test_changing_channels(api: Api, cast: Cast) -> None:
    await api.call("PUT", f"/v1/me/follows/{TEAM}", token=cast.member)
    response = await api.call(
        "PUT",
        f"/v1/me/follows/{TEAM}",
        token=cast.member,
        json={"channels": ["webhook", "email", "email"]},
    )
    assert response.status_code == 200
    # deduplicated, in the canonical order, app always on
    assert response.json() == {
        "account": TEAM,
        "channels": ["app", "email", "webhook"],
        "mandatory": False,
    }
    changed = (await api.events())[-1]
    assert isinstance(changed, events.FollowChannelsChanged)
    assert changed.channels == ("app", "email", "webhook")
    assert (changed.follower, changed.account) == ("mia", TEAM)

    back = await api.call("PUT", f"/v1/me/follows/{TEAM}", token=cast.member, json={"channels": []})
    assert back.json()["channels"] == ["app"]


async def test_list_follows(api: Api, cast: Cast) -> None:
    assert (await api.call("GET", "/v1/me/follows", token=cast.member)).json() == []
    await api.call("PUT", "/v1/me/follows/svc", token=cast.member, json={"channels": ["sms"]})
    await api.call("PUT", f"/v1/me/follows/{TEAM}", token=cast.member)
    await api.call("PUT", "/v1/me/follows/eve", token=cast.member)
    response = await api.call("GET", "/v1/me/follows", token=cast.member)
    assert response.status_code == 200
    assert response.json() == [
        {"account": "eve", "channels": ["app"], "mandatory": False},
        {"account": TEAM, "channels": ["app"], "mandatory": False},
        {"account": "svc", "channels": ["app", "sms"], "mandatory": False},
    ]
    # one's follows are one's own
    assert (await api.call("GET", "/v1/me/follows", token=cast.external)).json() == []


async def test_unfollow(api: Api, cast: Cast) -> None:
    await api.call("PUT", f"/v1/me/follows/{TEAM}", token=cast.member)
    before = await api.log_length()
    response = await api.call("DELETE", f"/v1/me/follows/{TEAM}", token=cast.member)
    assert response.status_code == 204
    assert response.content == b""
    assert await api.log_length() == before + 1
    gone = (await api.events())[-1]
    assert isinstance(gone, events.AccountUnfollowed)
    assert (gone.follower, gone.account, gone.actor) == ("mia", TEAM, "mia")
    assert await api.follows("mia") == {}

    # unfollowing what you do not follow is a no-op
    snapshot = await api.snapshot()
    assert (
        await api.call("DELETE", f"/v1/me/follows/{TEAM}", token=cast.member)
    ).status_code == 204
    assert await api.snapshot() == snapshot


@pytest.mark.parametrize("who", ["admin", "member", "external"])
async def test_every_person_may_follow(api: Api, cast: Cast, who: str) -> None:
    response = await api.call("PUT", "/v1/me/follows/svc", token=cast.by_name(who))
    assert response.status_code == 200, response.text
    followed = (await api.events())[-1]
    assert isinstance(followed, events.AccountFollowed)
    assert followed.external is (who == "external")


# --- PUT /v1/accounts/{handle}/enrolments ---------------------------------------------------
async def test_enrol_listed_people_mandatory(api: Api, cast: Cast) -> None:
    before = await api.log_length()
    body = await enrol(api, TEAM, followers=["mia", "eve", "mia"], channels=["sms"], mandatory=True)
    assert body == {
        "id": body["id"],
        "account": TEAM,
        "followers": 2,
        "channels": ["app", "sms"],
        "mandatory": True,
    }
    enrolment, *appended = (await api.events())[before:]
    assert isinstance(enrolment, events.FollowersEnrolled)
    assert enrolment.id == body["id"]
    assert (enrolment.followers, enrolment.externals) == (("eve", "mia"), ("eve",))
    assert len(appended) == 2
    assert all(isinstance(e, events.FollowerEnrolled) for e in appended)
    by_follower = {e.follower: e for e in appended if isinstance(e, events.FollowerEnrolled)}
    assert set(by_follower) == {"mia", "eve"}
    for handle, event in by_follower.items():
        assert event.account == TEAM
        assert event.actor == "admin"
        assert event.channels == ("app", "sms")
        assert event.mandatory is True
        assert event.external is (handle == "eve")
        assert event.enrolment == body["id"]
    assert await api.follows("mia") == {TEAM: "app,sms|1"}

    listed = (await api.call("GET", "/v1/me/follows", token=cast.member)).json()
    assert listed == [{"account": TEAM, "channels": ["app", "sms"], "mandatory": True}]

    snapshot = await api.snapshot()
    refused = await api.call("DELETE", f"/v1/me/follows/{TEAM}", token=cast.member)
    assert_error(refused, 403, "mandatory_follow")
    assert await api.snapshot() == snapshot


async def test_enrolment_keeps_the_channels_the_person_chose(api: Api, cast: Cast) -> None:
    await api.call(
        "PUT", f"/v1/me/follows/{TEAM}", token=cast.member, json={"channels": ["webhook"]}
    )
    await enrol(api, TEAM, followers=["mia"], channels=["email"], mandatory=True)
    assert await api.follows("mia") == {TEAM: "app,email,webhook|1"}
    # changing channels later keeps the follow mandatory
    changed = await api.call(
        "PUT", f"/v1/me/follows/{TEAM}", token=cast.member, json={"channels": ["sms"]}
    )
    assert changed.json() == {"account": TEAM, "channels": ["app", "sms"], "mandatory": True}
    assert_error(await api.call("DELETE", f"/v1/me/follows/{TEAM}", token=cast.member), 403)


async def test_a_later_optional_enrolment_lifts_the_obligation(api: Api, cast: Cast) -> None:
    await enrol(api, TEAM, followers=["mia"], mandatory=True)
    await enrol(api, TEAM, followers=["mia"], mandatory=False)
    assert (
        await api.call("DELETE", f"/v1/me/follows/{TEAM}", token=cast.member)
    ).status_code == 204


async def test_optional_enrolment_can_be_unfollowed(api: Api, cast: Cast) -> None:
    body = await enrol(api, "svc", followers=["mia"])
    assert body["mandatory"] is False
    assert body["channels"] == ["app"]
    assert (await api.call("DELETE", "/v1/me/follows/svc", token=cast.member)).status_code == 204


async def test_an_account_is_not_enrolled_to_follow_itself(api: Api, cast: Cast) -> None:
    before = await api.log_length()
    body = await enrol(api, "mia", followers=["mia", "admin"])
    assert body["followers"] == 1
    appended = (await api.events())[before:]
    assert [e.follower for e in appended if isinstance(e, events.FollowerEnrolled)] == ["admin"]
    assert await api.follows("mia") == {}


async def test_all_members_now_and_later(api: Api, cast: Cast) -> None:
    before = await api.log_length()
    body = await enrol(api, TEAM, followers="all_members", channels=["email"], mandatory=True)
    # members and admins; never externals, services or teams
    assert body["followers"] == 2
    appended = (await api.events())[before:]
    rule = appended[0]
    assert isinstance(rule, events.MembersEnrolled)
    assert (rule.account, rule.channels, rule.mandatory) == (TEAM, ("app", "email"), True)
    enrolled = {e.follower for e in appended if isinstance(e, events.FollowerEnrolled)}
    assert enrolled == {"admin", "mia"}
    assert len(appended) == 3
    for handle in ("admin", "mia"):
        assert await api.follows(handle) == {TEAM: "app,email|1"}
    for handle in ("eve", "svc"):
        assert await api.follows(handle) == {}

    # people created afterwards: members and admins are enrolled at creation, others are not
    length = await api.log_length()
    late = await api.person("late", "member")
    boss = await api.person("boss", "admin")
    await api.person("guest", "external")
    await api.create("robot", "service")
    await api.create("support", "team")
    assert await api.follows("late") == {TEAM: "app,email|1"}
    assert await api.follows("boss") == {TEAM: "app,email|1"}
    for handle in ("guest", "robot", "support"):
        assert await api.follows(handle) == {}
    appended = (await api.events())[length:]
    late_enrolments = [e for e in appended if isinstance(e, events.FollowerEnrolled)]
    assert sorted(e.follower for e in late_enrolments) == ["boss", "late"]
    for event in late_enrolments:
        assert (event.account, event.mandatory, event.channels) == (TEAM, True, ("app", "email"))
        # the enrolment follows the account's creation in the log
        created = next(
            e
            for e in appended
            if isinstance(e, events.AccountCreated) and e.handle == event.follower
        )
        assert int(created.id) < int(event.id)

    for token in (late, boss):
        assert_error(
            await api.call("DELETE", f"/v1/me/follows/{TEAM}", token=token), 403, "mandatory_follow"
        )


async def test_all_members_rule_is_replaced_by_a_later_one(api: Api, cast: Cast) -> None:
    await enrol(api, TEAM, followers="all_members", mandatory=True)
    await enrol(api, TEAM, followers="all_members", channels=["sms"], mandatory=False)
    await api.person("late", "member")
    assert await api.follows("late") == {TEAM: "app,sms|0"}
    assert await api.follows("mia") == {TEAM: "app,sms|0"}
