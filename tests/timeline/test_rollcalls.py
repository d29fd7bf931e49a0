"""Roll-calls, part 1: opened with a post, the audience recorded at fan-out, answers (own and
proxy), help handled, the report and its lists, close and extend, bad input refused.

Runs the api and the real timeline worker on 4 partitions, so the audience, the answers and
the counts are spread over several slots and every read sums them.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from muster import events, keys
from muster.api import rollcalls
from muster.ids import IdGenerator
from muster.projections.fanout import Fanout
from muster.settings import Settings
from timeline.conftest import OpenStack, Stack

pytestmark = pytest.mark.anyio
PARTITIONS = 4
OPTIONS = [
    {"key": "1", "label": "I'm safe", "kind": "ok"},
    {"key": "2", "label": "I need help", "kind": "help"},
    {"key": "3", "label": "Not on site", "kind": "other"},
]


@pytest.fixture
def rc_settings(timeline_settings: Settings) -> Settings:
    return msgspec.structs.replace(timeline_settings, partitions=PARTITIONS)


def soon(minutes: int = 30) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


async def log_length(stack: Stack) -> int:
    return sum([await stack.redis.xlen(keys.events(p)) for p in range(PARTITIONS)])


async def logged(stack: Stack, kind: type[Any]) -> list[Any]:
    found = []
    for p in range(PARTITIONS):
        entries: Any = await stack.redis.xrange(keys.events(p))
        found += [events.decode(fields[events.STREAM_FIELD]) for _, fields in entries]
    return sorted((e for e in found if isinstance(e, kind)), key=lambda e: int(e.id))


async def people(stack: Stack, names: list[str], follow: str | None) -> dict[str, str]:
    tokens = {}
    for name in names:
        tokens[name] = await stack.person(name)
        if follow is not None:
            await stack.follow(tokens[name], follow)
    return tokens


async def open_rollcall(stack: Stack, token: str, **fields: Any) -> str:
    body = {"options": OPTIONS, "deadline": soon(), **fields}
    post = await stack.post(token, "Fire alarm in building A: are you safe?", rollcall=body)
    assert post["rollcall"]["options"] == OPTIONS
    await stack.settle()
    rollcall_id: str = post["id"]
    return rollcall_id


async def test_a_manager_answers_for_their_reports_only(
    rc_settings: Settings, open_stack: OpenStack
) -> None:
    """Issue 15: a proxy answer may come from the person's manager, who otherwise does not
    run the roll-call: for their own report, not for anyone else, and the actor recorded."""
    from timeline.conftest import ADMIN_TOKEN

    async with open_stack(rc_settings) as s:
        boss = await s.person("boss")
        tokens = await people(s, ["ana", "ben", "cai"], follow="boss")
        for report in ("ben", "cai"):
            await s.ok(
                "PATCH", f"/v1/accounts/{report}", token=ADMIN_TOKEN, json={"manager": "ana"}
            )
        await s.ok("PATCH", "/v1/accounts/cai", token=ADMIN_TOKEN, json={"manager": "boss"})
        rc = await open_rollcall(s, boss)
        path = f"/v1/rollcalls/{rc}"

        proxy = await s.ok(
            "PUT", f"{path}/responses/ben", token=tokens["ana"], json={"option": "1"}
        )
        assert (proxy["channel"], proxy["by"]) == ("proxy", "ana")
        before = await log_length(s)
        for handle in ("cai", "ana"):  # managed by someone else now; herself is not a proxy
            refused = await s.call(
                "PUT", f"{path}/responses/{handle}", token=tokens["ana"], json={"option": "1"}
            )
            assert refused.status_code == 404
            assert refused.json()["error"]["code"] == "no_such_rollcall"
        assert await log_length(s) == before
        assert (await s.call("GET", f"{path}/recipients", token=tokens["ana"])).status_code == 404
        report = await s.ok("GET", path, token=boss)
        assert report["counts"]["by_channel"] == {"proxy": 1}


async def test_a_roll_call_from_opening_to_close(
    rc_settings: Settings, open_stack: OpenStack
) -> None:
    async with open_stack(rc_settings) as s:
        boss = await s.person("boss")
        tokens = await people(s, ["ana", "ben", "cai", "dee"], follow="boss")
        outsider = await s.person("zed")
        rc = await open_rollcall(s, boss)
        path = f"/v1/rollcalls/{rc}"

        report = await s.ok("GET", path, token=boss)
        assert report["state"] == "open"
        assert report["counts"]["targeted"] == 4  # the followers, never the author
        assert report["counts"]["answered"] == 0
        assert report["help_open"] == 0

        mine = await s.ok("POST", f"{path}/responses", token=tokens["ana"], json={"option": "1"})
        assert (mine["option"], mine["kind"], mine["channel"], mine["by"]) == (
            "1",
            "ok",
            "app",
            "ana",
        )
        # a change of mind: the latest answer counts, the history is the log
        await s.ok("POST", f"{path}/responses", token=tokens["ben"], json={"option": "1"})
        await s.ok(
            "POST",
            f"{path}/responses",
            token=tokens["ben"],
            json={"option": "2", "note": "stuck, 3rd floor"},
        )
        # someone not asked: 403, and nothing appended
        before = await log_length(s)
        refused = await s.call("POST", f"{path}/responses", token=outsider, json={"option": "1"})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "not_in_audience"
        unknown = await s.call(
            "POST", f"{path}/responses", token=tokens["cai"], json={"option": "9"}
        )
        assert unknown.status_code == 422
        assert unknown.json()["error"]["code"] == "unknown_option"
        assert await log_length(s) == before

        # a proxy answer: the author answers for cai; not for an outsider, and not by a peer
        proxy = await s.ok("PUT", f"{path}/responses/cai", token=boss, json={"option": "3"})
        assert (proxy["channel"], proxy["by"]) == ("proxy", "boss")
        peer = await s.call(
            "PUT", f"{path}/responses/dee", token=tokens["ana"], json={"option": "1"}
        )
        assert peer.status_code == 404
        assert (
            await s.call("PUT", f"{path}/responses/zed", token=boss, json={"option": "1"})
        ).status_code == 404

        report = await s.ok("GET", path, token=boss)
        counts = report["counts"]
        assert counts["answered"] == 3
        assert counts["accounted_for"] == 3
        assert counts["by_option"] == {"1": 1, "2": 1, "3": 1}
        assert counts["by_channel"] == {"app": 2, "proxy": 1}
        assert report["help_open"] == 1

        # a person asked sees only their own answer; the outsider sees nothing
        own = await s.ok("GET", path, token=tokens["ben"])
        assert "counts" not in own
        assert own["answer"]["option"] == "2"
        assert (await s.call("GET", path, token=outsider)).status_code == 404
        assert (await s.call("GET", f"{path}/recipients", token=tokens["ben"])).status_code == 404

        listed = await s.ok("GET", f"{path}/recipients", token=boss)
        assert [r["handle"] for r in listed] == ["ana", "ben", "cai", "dee"]
        assert [
            r["handle"]
            for r in await s.ok("GET", f"{path}/recipients?status=unanswered", token=boss)
        ] == ["dee"]
        assert [
            r["handle"]
            for r in await s.ok("GET", f"{path}/recipients?status=help_open", token=boss)
        ] == ["ben"]
        assert [
            r["handle"] for r in await s.ok("GET", f"{path}/recipients?channel=proxy", token=boss)
        ] == ["cai"]
        page = await s.ok("GET", f"{path}/recipients?limit=2&after=ana", token=boss)
        assert [r["handle"] for r in page] == ["ben", "cai"]
        bad = await s.call("GET", f"{path}/recipients?status=maybe", token=boss)
        assert bad.status_code == 422

        handled = await s.ok(
            "POST", f"{path}/help/ben/handled", token=boss, json={"note": "reached"}
        )
        assert handled["help_handled"] is True
        assert (await s.ok("GET", path, token=boss))["help_open"] == 0
        again = await s.call("POST", f"{path}/help/ben/handled", token=boss, json={})
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "no_open_help"
        # help again after it was handled: open again
        await s.ok("POST", f"{path}/responses", token=tokens["ben"], json={"option": "2"})
        assert (await s.ok("GET", path, token=boss))["help_open"] == 1

        csv_text = (await s.call("GET", f"{path}/export?format=csv", token=boss)).text
        rows = list(csv.DictReader(io.StringIO(csv_text)))
        assert [r["handle"] for r in rows] == ["ana", "ben", "cai", "dee"]
        assert rows[2]["by"] == "boss"
        assert rows[3]["state"] == "notified"
        lines = (await s.call("GET", f"{path}/export?format=jsonl", token=boss)).text.splitlines()
        assert [json.loads(line)["handle"] for line in lines] == ["ana", "ben", "cai", "dee"]

        later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        extended = await s.ok("POST", f"{path}/extend", token=boss, json={"deadline": later})
        assert extended["deadline"].startswith(later[:16])
        earlier = await s.call("POST", f"{path}/extend", token=boss, json={"deadline": soon(60)})
        assert earlier.status_code == 422
        assert earlier.json()["error"]["code"] == "deadline_earlier"

        closed = await s.ok("POST", f"{path}/close", token=boss)
        assert closed["state"] == "closed"
        gone = await s.call("POST", f"{path}/responses", token=tokens["dee"], json={"option": "1"})
        assert gone.status_code == 410
        assert gone.json()["error"]["code"] == "rollcall_closed"
        assert (await s.call("POST", f"{path}/close", token=boss)).status_code == 409

        kinds = [events.event_type(e) for e in await logged(s, events.Event)]
        assert kinds.count("RollCallAnswered") == 5
        assert {"RollCallHelpHandled", "RollCallExtended", "RollCallClosed"} <= set(kinds)


async def test_the_audience_is_who_the_post_reached_then(
    rc_settings: Settings, open_stack: OpenStack
) -> None:
    async with open_stack(rc_settings) as s:
        boss = await s.person("boss")
        tokens = await people(s, ["ana", "ben"], follow="boss")
        await s.ok("DELETE", "/v1/me/follows/boss", 204, token=tokens["ben"])
        rc = await open_rollcall(s, boss)
        # the walk run again (a worker replaced mid-fan-out) records nobody twice
        post = next(e for e in await logged(s, events.PostPublished) if e.id == rc)
        fanout = Fanout(s.redis, partitions=PARTITIONS, cap=10)
        for walk in fanout.audience_walks(post, IdGenerator(999)):
            await walk.run()
        assert len(await logged(s, events.RollCallAudienceRecorded)) == 1
        late = await s.person("lou")
        await s.follow(late, "boss")
        await s.settle()
        report = await s.ok("GET", f"/v1/rollcalls/{rc}", token=boss)
        assert report["counts"]["targeted"] == 1
        # the snapshot is in the log, each person once, the script's JSON a valid event
        recorded = await logged(s, events.RollCallAudienceRecorded)
        assert [(e.rollcall, e.account, e.actor, e.recipients) for e in recorded] == [
            (rc, "boss", "boss", ("ana",))
        ]
        for token in (tokens["ben"], late):
            answer = await s.call(
                "POST", f"/v1/rollcalls/{rc}/responses", token=token, json={"option": "1"}
            )
            assert answer.status_code == 403


async def test_late_answers_are_marked_and_after_the_grace_refused(
    rc_settings: Settings, open_stack: OpenStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_stack(rc_settings) as s:
        boss = await s.person("boss")
        tokens = await people(s, ["ana", "ben"], follow="boss")
        rc = await open_rollcall(s, boss)
        deadline = datetime.fromisoformat(
            (await s.ok("GET", f"/v1/rollcalls/{rc}", token=boss))["deadline"]
        )
        monkeypatch.setattr(rollcalls, "utcnow", lambda: deadline + timedelta(minutes=5))
        late = await s.ok(
            "POST", f"/v1/rollcalls/{rc}/responses", token=tokens["ana"], json={"option": "1"}
        )
        assert late["late"] is True
        assert (await s.ok("GET", f"/v1/rollcalls/{rc}", token=boss))["counts"]["late"] == 1
        monkeypatch.setattr(
            rollcalls, "utcnow", lambda: deadline + timedelta(seconds=rollcalls.GRACE_S + 1)
        )
        gone = await s.call(
            "POST", f"/v1/rollcalls/{rc}/responses", token=tokens["ben"], json={"option": "1"}
        )
        assert gone.status_code == 410
        assert (await s.ok("GET", f"/v1/rollcalls/{rc}", token=boss))["state"] == "closed"


BAD = [
    ({"options": OPTIONS[:1]}, "invalid_field"),
    ({"options": OPTIONS * 3}, "invalid_field"),
    ({"options": [OPTIONS[0], {**OPTIONS[1], "key": "1"}]}, "duplicate_option"),
    ({"options": [OPTIONS[0], {**OPTIONS[1], "kind": "maybe"}]}, "invalid_field"),
    ({"options": [OPTIONS[0], {**OPTIONS[1], "key": "Big Key"}]}, "invalid_field"),
    ({"options": [OPTIONS[0], {**OPTIONS[1], "label": "x" * 65}]}, "invalid_field"),
    ({"options": [OPTIONS[0], {**OPTIONS[1], "label": "  "}]}, "text_empty"),
    ({"deadline": "2020-01-01T00:00:00Z"}, "deadline_past"),
    ({"deadline": soon(60 * 24 * 8)}, "deadline_too_far"),
    ({"deadline": "2030-01-01T00:00:00"}, "invalid_field"),  # no UTC offset
    ({"policy": "site_evacuation"}, "no_such_policy"),
    ({"extra": 1}, "unknown_field"),
]


@pytest.mark.parametrize(("change", "code"), BAD, ids=[c for _, c in BAD])
async def test_bad_roll_calls_are_refused_and_change_nothing(
    rc_settings: Settings, open_stack: OpenStack, change: dict[str, Any], code: str
) -> None:
    async with open_stack(rc_settings) as s:
        boss = await s.person("boss")
        before = await log_length(s)
        body = {"options": OPTIONS, "deadline": soon(), **change}
        refused = await s.call(
            "POST", "/v1/posts", token=boss, json={"text": "safe?", "rollcall": body}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == code
        assert await log_length(s) == before


async def test_counts_stay_right_under_concurrent_answers(
    rc_settings: Settings, open_stack: OpenStack
) -> None:
    async with open_stack(rc_settings) as s:
        boss = await s.person("boss")
        names = [f"p{i:02d}" for i in range(40)]
        tokens = await people(s, names, follow="boss")
        rc = await open_rollcall(s, boss)
        path = f"/v1/rollcalls/{rc}/responses"

        async def answer(name: str, option: str) -> None:
            await s.ok("POST", path, token=tokens[name], json={"option": option})

        # everyone at once, and p00 racing itself with every option many times over
        crowd = [answer(n, "1" if i % 2 else "3") for i, n in enumerate(names[1:], 1)]
        race = [answer("p00", "123"[i % 3]) for i in range(30)]
        await asyncio.gather(*crowd, *race)

        report = await s.ok("GET", f"/v1/rollcalls/{rc}", token=boss)
        counts = report["counts"]
        assert counts["answered"] == 40
        assert counts["accounted_for"] == 40
        assert sum(counts["by_option"].values()) == 40
        assert counts["by_channel"] == {"app": 40}
        rows = await s.ok("GET", f"/v1/rollcalls/{rc}/recipients?limit=1000", token=boss)
        by_option: dict[str, int] = {}
        for row in rows:
            by_option[row["option"]] = by_option.get(row["option"], 0) + 1
        assert counts["by_option"] == {
            "1": by_option.get("1", 0),
            "2": by_option.get("2", 0),
            "3": by_option.get("3", 0),
        }
        # p00's answer is the last of theirs in the log, and help counts only if it is help
        mine = [e for e in await logged(s, events.RollCallAnswered) if e.recipient == "p00"]
        assert len(mine) == 30
        assert next(r for r in rows if r["handle"] == "p00")["option"] == mine[-1].option
        assert report["help_open"] == (1 if mine[-1].option == "2" else 0)
