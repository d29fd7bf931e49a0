"""Escalation end to end: a roll-call opened with a policy fires its steps on schedule, to
the people not yet accounted for and then to their managers, through the delivery streams
the delivery workers read; the policy is the one the roll-call opened with; the send cap and
repeats hold; a remind goes to those not accounted for, once per interval.

The api, the real timeline worker and the real escalation worker run on 4 partitions; steps
are a few seconds apart and the checks poll with bounded waits.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from timeline.conftest import ADMIN_TOKEN, Stack

from escalation.conftest import (
    PARTITIONS,
    OpenEscalation,
    escalation_worker,
    eventually,
    logged,
    open_rollcall,
    put_policy,
    requests,
    rounds_done,
    set_manager,
    told,
)
from muster import events, keys
from muster.api.metrics import read_system
from muster.settings import Settings

pytestmark = pytest.mark.anyio


async def people(stack: Stack, follow: str, **contacts: dict[str, str]) -> dict[str, str]:
    tokens = {}
    for name, fields in contacts.items():
        tokens[name] = await stack.person(name, **fields)
        await stack.follow(tokens[name], follow)
    return tokens


async def test_steps_fire_on_schedule_to_the_person_then_their_manager(
    escalation_settings: Settings, open_escalation: OpenEscalation
) -> None:
    async with open_escalation(escalation_settings, worker=False) as s:
        await put_policy(
            s,
            "evacuation",
            steps=[
                {"after_s": 3, "to": "recipient", "channels": ["email", "sms"]},
                {"after_s": 5, "to": "manager", "channels": "all"},
            ],
        )
        boss = await s.person("boss")
        await s.person("mgr", email="mgr@example.com")
        t = await people(
            s,
            "boss",
            ana={"email": "ana@example.com", "phone": "+15550000001"},
            ben={"email": "ben@example.com"},
            cai={"email": "cai@example.com"},
            dan={"email": "dan@example.com"},
            fay={},  # no contact point: unreachable off the app
        )
        for person in ("ana", "ben", "dan", "fay"):
            await set_manager(s, person, "mgr")
        rc = await open_rollcall(s, boss, "evacuation")
        opened = datetime.fromisoformat(
            (await s.ok("GET", f"/v1/posts/{rc}", token=boss))["created_at"].replace("Z", "+00:00")
        )
        # dan answers before the escalation worker even starts (so before any step, however
        # slow the machine): he is never escalated; the rounds wait in the timer set
        await s.ok("POST", f"/v1/rollcalls/{rc}/responses", token=t["dan"], json={"option": "1"})
        async with escalation_worker(escalation_settings):

            async def both_fired() -> bool:
                return {r for r, _, _ in await told(s.redis, rc)} == {"s0l0", "s1l0"}

            await eventually(both_fired, "both steps fired")
            await eventually(lambda: rounds_done(s.redis), "every round handled")
            notices = await told(s.redis, rc)
            assert sorted(notices) == [
                ("s0l0", "ana", "ana"),
                ("s0l0", "ben", "ben"),
                ("s0l0", "cai", "cai"),
                ("s0l0", "fay", "fay"),
                ("s1l0", "ana", "mgr"),  # cai has no manager: nobody to tell
                ("s1l0", "ben", "mgr"),
                ("s1l0", "fay", "mgr"),
            ]
            fired = {e.round: e for e in await logged(s.redis, events.RollCallEscalated)}
            assert fired["s0l0"].at >= opened + timedelta(seconds=3)
            assert fired["s1l0"].at >= opened + timedelta(seconds=5)
            assert (fired["s1l0"].to, fired["s1l0"].step) == ("manager", 1)

            sent = Counter(r.id for r in await requests(s.redis) if r.kind == "escalation")
            assert set(sent.values()) == {1}
            assert set(sent) == {
                f"{rc}-s0l0.ana.email",
                f"{rc}-s0l0.ana.sms",  # she has a phone; the step asks for email and sms
                f"{rc}-s0l0.ben.email",
                f"{rc}-s0l0.cai.email",
                f"{rc}-s1l0-ana.mgr.email",  # one message to the manager about each person
                f"{rc}-s1l0-ben.mgr.email",
                f"{rc}-s1l0-fay.mgr.email",
            }
            # the report: levels, managers, and fay found unreachable by the first step
            rows = {
                r["handle"]: r
                for r in await s.ok("GET", f"/v1/rollcalls/{rc}/recipients", token=boss)
            }
            assert {h: (r["escalation_level"], r["manager"]) for h, r in rows.items()} == {
                "ana": (2, "mgr"),
                "ben": (2, "mgr"),
                "cai": (1, None),
                "dan": (0, "mgr"),
                "fay": (2, "mgr"),
            }
            report = await s.ok("GET", f"/v1/rollcalls/{rc}", token=boss)
            assert report["counts"]["unreachable"] == 1
            # the statuses start pending, where the delivery workers pick them up
            q = keys.partition_of("mgr", PARTITIONS)
            status = await s.redis.hget(keys.delivery_status(q, f"{rc}-s1l0-ana"), "mgr:email")
            assert status == b"pending|0|"
            # and what an operator's scrape shows
            metrics = {m.name: m for m in await read_system(s.redis, PARTITIONS)}
            told_by = {
                tuple(x.labels.values()): x.value
                for x in metrics["muster_rollcall_escalations"].samples
            }
            assert told_by == {("recipient",): 4, ("manager",): 3}
            (overdue,) = metrics["muster_rollcall_timer_overdue_seconds"].samples
            assert overdue.value == 0


async def test_a_roll_call_keeps_the_policy_it_opened_with(
    escalation_settings: Settings, open_escalation: OpenEscalation
) -> None:
    async with open_escalation(escalation_settings) as s:
        first = await put_policy(
            s, "drill", steps=[{"after_s": 2, "to": "recipient", "channels": ["email"]}]
        )
        assert first["version"] == 1
        boss = await s.person("boss")
        await s.person("desk", email="desk@example.com")
        await people(s, "boss", ana={"email": "ana@example.com"})
        rc = await open_rollcall(s, boss, "drill")
        # changed, then deleted, after the roll-call opened: the roll-call keeps version 1
        second = await put_policy(
            s,
            "drill",
            steps=[{"after_s": 1, "to": "fallback", "channels": "all", "fallback": "desk"}],
            max_sends_per_recipient=1,
        )
        assert second["version"] == 2
        await s.ok("DELETE", "/v1/escalation-policies/drill", 204, token=ADMIN_TOKEN)
        (post,) = [p for p in await logged(s.redis, events.PostPublished) if p.id == rc]
        assert post.rollcall.policy == "drill"
        assert post.rollcall.escalation.version == 1

        async def fired() -> bool:
            return bool(await told(s.redis, rc))

        await eventually(fired, "the step fired")
        await eventually(lambda: rounds_done(s.redis), "every round handled")
        assert await told(s.redis, rc) == [("s0l0", "ana", "ana")]
        sent = [r.id for r in await requests(s.redis) if r.kind == "escalation"]
        assert sent == [f"{rc}-s0l0.ana.email"]


async def test_repeats_stop_at_the_send_cap_and_an_answer_stops_them(
    escalation_settings: Settings, open_escalation: OpenEscalation
) -> None:
    async with open_escalation(escalation_settings) as s:
        await put_policy(
            s,
            "nag",
            steps=[{"after_s": 1, "to": "recipient", "channels": ["email"]}],
            repeat={"times": 3, "every_s": 1},
            max_sends_per_recipient=2,
        )
        boss = await s.person("boss")
        t = await people(s, "boss", ana={"email": "a@example.com"}, ben={"email": "b@example.com"})
        rc = await open_rollcall(s, boss, "nag")

        async def ben_told_once() -> bool:
            return any(n[1] == "ben" for n in await told(s.redis, rc))

        await eventually(ben_told_once, "the first round")
        await s.ok("POST", f"/v1/rollcalls/{rc}/responses", token=t["ben"], json={"option": "1"})
        await eventually(lambda: rounds_done(s.redis), "every round handled")
        by_person = Counter(subject for _, subject, _ in await told(s.redis, rc))
        assert by_person["ana"] == 2  # four rounds, capped at two
        assert 1 <= by_person["ben"] <= 2
        # told before his answer, never after: in his partition's log (where both are
        # appended, the answer under WATCH of the round's page) no notice follows it
        q = keys.partition_of("ben", PARTITIONS)
        entries: Any = await s.redis.xrange(keys.events(q))
        order = [events.decode(fields[events.STREAM_FIELD]) for _, fields in entries]
        answer = next(i for i, e in enumerate(order) if isinstance(e, events.RollCallAnswered))
        for event in order[answer:]:
            if isinstance(event, events.RollCallEscalated):
                assert all(n.subject != "ben" for n in event.notices)


async def test_remind_goes_to_those_not_accounted_for_once_per_interval(
    escalation_settings: Settings, open_escalation: OpenEscalation
) -> None:
    async with open_escalation(escalation_settings) as s:
        boss = await s.person("boss")
        t = await people(
            s,
            "boss",
            ana={"email": "a@example.com"},
            ben={"email": "b@example.com"},
            cai={"email": "c@example.com"},
        )
        await s.follow(t["cai"], "boss", channels=["app", "email"])
        outsider = await s.person("zed")
        rc = await open_rollcall(s, boss, None)  # no policy: a remind still works
        path = f"/v1/rollcalls/{rc}"
        await s.ok("POST", f"{path}/responses", token=t["ana"], json={"option": "1"})
        await s.ok("PUT", f"{path}/responses/ben", token=boss, json={"option": "1"})

        assert (await s.call("POST", f"{path}/remind", token=outsider)).status_code == 404
        assert (await s.call("POST", f"{path}/remind", token=t["cai"])).status_code == 404
        report = await s.ok("POST", f"{path}/remind", 202, token=boss)
        assert report["counts"]["answered"] == 2
        (reminded,) = await logged(s.redis, events.RollCallReminded)
        assert (reminded.actor, reminded.rollcall) == ("boss", rc)

        async def fired() -> bool:
            return bool(await told(s.redis, rc))

        await eventually(fired, "the remind fired")
        await eventually(lambda: rounds_done(s.redis), "every round handled")
        tag = f"r{reminded.id}"
        assert await told(s.redis, rc) == [(tag, "cai", "cai")]
        sent = [r.id for r in await requests(s.redis) if r.kind == "escalation"]
        assert sent == [f"{rc}-{tag}.cai.email"]  # the channels cai chose for following boss

        again = await s.call("POST", f"{path}/remind", token=ADMIN_TOKEN)
        assert again.status_code == 429
        assert again.json()["error"]["code"] == "remind_too_soon"
        assert int(again.headers["Retry-After"]) > 0
        assert len(await logged(s.redis, events.RollCallReminded)) == 1

        await s.ok("POST", f"{path}/close", token=boss)
        closed = await s.call("POST", f"{path}/remind", token=boss)
        assert closed.status_code == 409
        assert closed.json()["error"]["code"] == "rollcall_closed"
