"""Escalation policies (create, version, list, delete; bad input refused with a clear 422 that
writes nothing) and managers (admins set them; nobody manages themselves)."""

from __future__ import annotations

from typing import Any

import pytest
from timeline.conftest import ADMIN_TOKEN, Stack

from escalation.conftest import OpenEscalation, logged, put_policy, soon
from muster import events, keys
from muster.settings import Settings

pytestmark = pytest.mark.anyio
GOOD: dict[str, Any] = {
    "steps": [
        {"after_s": 60, "to": "recipient", "channels": "chosen"},
        {"after_s": 600.5, "to": "manager", "channels": ["sms", "email"]},
        {"after_s": 1800, "to": "fallback", "channels": "all", "fallback": "desk"},
    ],
    "repeat": {"times": 2, "every_s": 900},
    "max_sends_per_recipient": 4,
}


async def log_length(s: Stack) -> int:
    return sum([await s.redis.xlen(keys.events(p)) for p in range(s.settings.partitions)])


async def test_policies_are_versioned_listed_and_deleted(
    escalation_settings: Settings, open_escalation: OpenEscalation
) -> None:
    async with open_escalation(escalation_settings, worker=False) as s:
        await s.person("desk")
        member = await s.person("mia")
        path = "/v1/escalation-policies/site-evacuation"
        for method, body in (("PUT", GOOD), ("GET", None), ("DELETE", None)):
            kw: dict[str, Any] = {} if body is None else {"json": body}
            refused = await s.call(method, path, token=member, **kw)
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "admin_only"
        assert (await s.call("GET", path)).status_code == 401

        first = await put_policy(s, "site-evacuation", **GOOD)
        assert (first["name"], first["version"], first["updated_by"]) == (
            "site-evacuation",
            1,
            "admin",
        )
        assert first["steps"][1] == {
            "after_s": 600.5,
            "to": "manager",
            "channels": ["sms", "email"],
        }
        assert first["repeat"] == {"times": 2, "every_s": 900}
        second = await put_policy(s, "site-evacuation", steps=GOOD["steps"][:1])
        assert second["version"] == 2
        assert "repeat" not in second
        await put_policy(s, "drill", steps=GOOD["steps"][:1])
        assert await s.ok("GET", path, token=ADMIN_TOKEN) == second
        listed = await s.ok("GET", "/v1/escalation-policies", token=ADMIN_TOKEN)
        assert [(p["name"], p["version"]) for p in listed] == [
            ("drill", 1),
            ("site-evacuation", 2),
        ]
        await s.ok("DELETE", path, 204, token=ADMIN_TOKEN)
        gone = await s.call("GET", path, token=ADMIN_TOKEN)
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "no_such_policy"
        assert (await s.call("DELETE", path, token=ADMIN_TOKEN)).status_code == 404
        # a name deleted and made again goes on counting: versions are never reused
        assert (await put_policy(s, "site-evacuation", **GOOD))["version"] == 3
        kinds = [type(e).__name__ for e in await logged(s.redis, events.Event)]
        assert kinds.count("EscalationPolicySet") == 4
        assert kinds.count("EscalationPolicyDeleted") == 1


def with_step(**changes: Any) -> dict[str, Any]:
    step = {"after_s": 60, "to": "recipient", "channels": "chosen", **changes}
    return {"steps": [{k: v for k, v in step.items() if v is not None}]}


BAD: list[tuple[dict[str, Any], str]] = [
    ({"steps": []}, "steps"),
    ({}, "steps"),
    (with_step(channels=["fax"]), "channels"),
    (with_step(channels=[]), "channels"),
    (with_step(channels="some"), "channels"),
    (with_step(channels=["email", "email"]), "invalid_channels"),
    (with_step(after_s=0), "after_s"),
    (with_step(after_s=-5), "after_s"),
    (with_step(after_s=8 * 24 * 3600), "after_s"),
    (with_step(to="boss"), "to"),
    (with_step(to="fallback"), "fallback_missing"),
    (with_step(to="fallback", fallback="nobody"), "unknown_fallback"),
    (with_step(fallback="desk"), "fallback_unexpected"),
    (
        {
            "steps": [
                {"after_s": 60, "to": "recipient", "channels": "all"},
                {"after_s": 30, "to": "manager", "channels": "all"},
            ]
        },
        "steps_out_of_order",
    ),
    ({**with_step(), "repeat": {"times": 0, "every_s": 60}}, "times"),
    ({**with_step(), "repeat": {"times": 10, "every_s": 60}}, "times"),
    ({**with_step(), "max_sends_per_recipient": 0}, "max_sends_per_recipient"),
    ({**with_step(), "colour": "red"}, "colour"),
]


async def test_bad_policies_are_refused_and_write_nothing(
    escalation_settings: Settings, open_escalation: OpenEscalation
) -> None:
    async with open_escalation(escalation_settings, worker=False) as s:
        await s.person("desk")
        before = await log_length(s)
        for body, says in BAD:
            refused = await s.call(
                "PUT", "/v1/escalation-policies/p1", token=ADMIN_TOKEN, json=body
            )
            assert refused.status_code == 422, (body, refused.text)
            error = refused.json()["error"]
            assert says in f"{error['code']} {error.get('field')} {error['message']}", (body, error)
        bad_name = await s.call(
            "PUT", "/v1/escalation-policies/Bad%20Name", token=ADMIN_TOKEN, json=with_step()
        )
        assert bad_name.status_code == 422
        assert await log_length(s) == before
        assert (
            await s.call("GET", "/v1/escalation-policies/p1", token=ADMIN_TOKEN)
        ).status_code == 404

        # a roll-call naming a policy that does not exist is refused too
        boss = await s.person("boss")
        options = [
            {"key": "1", "label": "ok", "kind": "ok"},
            {"key": "2", "label": "no", "kind": "help"},
        ]
        before = await log_length(s)
        post = await s.call(
            "POST",
            "/v1/posts",
            token=boss,
            json={
                "text": "safe?",
                "rollcall": {"options": options, "deadline": soon(), "policy": "p1"},
            },
        )
        assert post.status_code == 422
        assert post.json()["error"]["code"] == "no_such_policy"
        assert await log_length(s) == before


async def test_managers_are_set_by_admins_as_events(
    escalation_settings: Settings, open_escalation: OpenEscalation
) -> None:
    async with open_escalation(escalation_settings, worker=False) as s:
        ana = await s.person("ana")
        await s.person("mgr")
        await s.team("ops")
        done = await s.ok("PATCH", "/v1/accounts/ana", token=ADMIN_TOKEN, json={"manager": "mgr"})
        assert done["manager"] == "mgr"
        before = await log_length(s)
        for token, body, status, code in (
            (ana, {"manager": "ana"}, 403, "admin_only"),
            (ADMIN_TOKEN, {"manager": "ana"}, 422, "manager_self"),
            (ADMIN_TOKEN, {"manager": "nobody"}, 422, "unknown_manager"),
            (ADMIN_TOKEN, {"manager": "ops"}, 422, "manager_not_person"),
            (ADMIN_TOKEN, {"manager": "Bad!"}, 422, None),
        ):
            refused = await s.call("PATCH", "/v1/accounts/ana", token=token, json=body)
            assert refused.status_code == status, (body, refused.text)
            if code is not None:
                assert refused.json()["error"]["code"] == code
        refused = await s.call(
            "PATCH", "/v1/accounts/ops", token=ADMIN_TOKEN, json={"manager": "mgr"}
        )
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "manager_not_person"
        assert await log_length(s) == before
        # the same manager again is no change; null removes it
        await s.ok("PATCH", "/v1/accounts/ana", token=ADMIN_TOKEN, json={"manager": "mgr"})
        assert await log_length(s) == before
        cleared = await s.ok("PATCH", "/v1/accounts/ana", token=ADMIN_TOKEN, json={"manager": None})
        assert "manager" not in cleared or cleared["manager"] is None
        changes = await logged(s.redis, events.ManagerChanged)
        assert [(e.handle, e.manager, e.actor) for e in changes] == [
            ("ana", "mgr", "admin"),
            ("ana", None, "admin"),
        ]
        p = keys.partition_of("ana", s.settings.partitions)
        assert await s.redis.hget(keys.account(p, "ana"), "manager") is None
