"""GET /v1/rollcalls/{id}/groups: the report per team of the people asked (the team accounts
they follow, not the one the roll-call was posted as) and per manager (the account record's
`manager`, where accounts have one: none, no groups); bad input refused."""

from __future__ import annotations

import msgspec
import pytest

from muster import keys
from muster.settings import Settings
from timeline.conftest import OpenStack
from timeline.test_rollcalls import people, soon

pytestmark = pytest.mark.anyio


@pytest.fixture
def rc_settings(timeline_settings: Settings) -> Settings:
    return msgspec.structs.replace(timeline_settings, partitions=4)


async def test_groups_by_team_and_by_manager(rc_settings: Settings, open_stack: OpenStack) -> None:
    async with open_stack(rc_settings) as s:
        boss = await s.person("boss")
        await s.team("acme", "boss")
        await s.team("ops")
        await s.team("eng")
        tokens = await people(s, ["ana", "ben", "cai", "dee", "eli"], follow="acme")
        for name in ("ana", "ben"):
            await s.follow(tokens[name], "ops")
        for name in ("ben", "cai"):
            await s.follow(tokens[name], "eng")
        await s.follow(tokens["dee"], "boss")  # a person, not a team
        post = await s.post(
            boss,
            "Are you safe?",
            **{"as": "acme"},
            rollcall={
                "options": [
                    {"key": "safe", "label": "Safe", "kind": "ok"},
                    {"key": "help", "label": "Need help", "kind": "help"},
                ],
                "deadline": soon(),
            },
        )
        await s.settle()
        rc = post["id"]
        path = f"/v1/rollcalls/{rc}"
        await s.ok("POST", f"{path}/responses", token=tokens["ana"], json={"option": "safe"})
        await s.ok("POST", f"{path}/responses", token=tokens["ben"], json={"option": "help"})

        by_team = await s.ok("GET", f"{path}/groups", token=boss)
        assert by_team == [
            {
                "group": "eng",
                "asked": 2,
                "answered": 1,
                "accounted_for": 1,
                "unanswered": 1,
                "help_open": 1,
                "by_option": {"safe": 0, "help": 1},
            },
            {
                "group": "ops",
                "asked": 2,
                "answered": 2,
                "accounted_for": 2,
                "unanswered": 0,
                "help_open": 1,
                "by_option": {"safe": 1, "help": 1},
            },
            {
                "group": None,
                "asked": 2,
                "answered": 0,
                "accounted_for": 0,
                "unanswered": 2,
                "help_open": 0,
                "by_option": {"safe": 0, "help": 0},
            },
        ]
        # no account has a manager: no manager groups
        assert await s.ok("GET", f"{path}/groups?by=manager", token=boss) == []
        # where account records carry one (escalation's PATCH /v1/accounts/{handle})
        for name, manager in (("ana", "boss"), ("ben", "boss"), ("cai", "dee")):
            p = keys.partition_of(name, rc_settings.partitions)
            await s.redis.hset(keys.account(p, name), "manager", manager)
        by_manager = await s.ok("GET", f"{path}/groups?by=manager", token=boss)
        assert [(g["group"], g["asked"], g["answered"]) for g in by_manager] == [
            ("boss", 2, 2),
            ("dee", 1, 0),
            (None, 2, 0),
        ]

        refused = await s.call("GET", f"{path}/groups?by=floor", token=boss)
        assert refused.status_code == 422
        assert (await s.call("GET", f"{path}/groups", token=tokens["ana"])).status_code == 404
