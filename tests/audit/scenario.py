"""A history with a little of everything, made through the HTTP API, for the replay tests.

Accounts of every kind (contact points, a webhook, an external), teams with posters (one
revoked), an `all_members` mandatory enrolment and a member created after it, follows with
channels, a channel change, an unfollow and a re-follow, internal, public and critical posts,
replies, DMs, a profile change that clears a contact point; a token reset, named tokens (one
revoked), a deactivated person and one deactivated and back, an auditor's read. With the test's low
MUSTER_FANOUT_ON_READ_THRESHOLD, `ops` is merged at read time once it has enough followers.
Last, two roll-calls as `ops`: answers, a change of mind, a proxy answer, help handled, an
extension and a close; and escalation: a policy in two versions (then deleted), managers set
and cleared, a roll-call opened with the policy whose two steps and a remind are fired by
the escalation worker's own code (muster.escalation.firing), not by its timer.
extension and a close; an answer through an answer link (suspect: pressed at once), a STOP
texted from a phone that was sent a roll-call, and a code from a phone that was sent none
(a RollCallAnswerRejected).
Workers are settled after graph changes, so live processing sees them in log order.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from audit.conftest import ADMIN_TOKEN, TWILIO_TOKEN, System
from muster import keys
from muster.answerlinks import Links, now_ms
from muster.connection import texts
from muster.escalation.firing import Firer
from muster.records import EscalationDue, decode_due

THRESHOLD = 4
"""MUSTER_FANOUT_ON_READ_THRESHOLD for these tests: `ops` (5+ followers) goes big."""


async def make_history(s: System) -> dict[str, str]:
    """Run the scenario; the tokens of the people and the service, by handle."""
    t: dict[str, str] = {}
    t["pat"] = await s.person("pat", email="pat@example.com", phone="+15551234567")
    t["mia"] = await s.person("mia", email="mia@example.com")
    t["tom"] = await s.person("tom")
    t["eve"] = await s.person("eve", "external", webhook_url="https://hooks.example.com/eve")
    service = await s.ok(
        "POST", "/v1/accounts", 201, token=ADMIN_TOKEN, json={"handle": "svc", "kind": "service"}
    )
    t["svc"] = service["token"]
    await s.team("ops", "pat", "tom")
    await s.team("infra", "pat")
    await s.ok(
        "PUT",
        "/v1/accounts/ops/enrolments",
        202,
        token=ADMIN_TOKEN,
        json={"followers": "all_members", "channels": ["app", "email"], "mandatory": True},
    )
    await s.follow(t["eve"], "ops")
    await s.follow(t["tom"], "infra", channels=["app", "sms"])
    await s.follow(t["mia"], "pat")
    await s.settle()
    first = await s.post(t["pat"], "db failover at 14:00", as_="ops")
    await s.post(t["tom"], "ack, on it", as_="ops", in_reply_to=first["id"])
    await s.post(t["pat"], "status page degraded", as_="ops", visibility="public")
    await s.post(t["pat"], "all hands", as_="ops", severity="critical")
    await s.post(t["svc"], "deploy 42 finished")
    await s.post(t["pat"], "infra maintenance tonight", as_="infra")
    await s.post(t["pat"], "personal note")
    await s.follow(t["mia"], "infra")
    await s.settle()
    await s.post(t["pat"], "infra: done", as_="infra", visibility="public")
    await s.ok("DELETE", "/v1/me/follows/infra", 204, token=t["mia"])
    await s.settle()
    await s.post(t["pat"], "infra: after mia left", as_="infra")
    await s.follow(t["tom"], "infra", channels=["app", "email"])  # a channel change
    await s.follow(t["mia"], "infra")
    await s.settle()
    await s.dm(t["pat"], "mia", "can you call?")
    await s.dm(t["mia"], "pat", "in 5")
    await s.dm(t["svc"], "tom", "your deploy is done")
    await s.ok(
        "PATCH",
        "/v1/me",
        token=t["mia"],
        json={"display_name": "Mia M", "email": None, "dm_channels": ["app"]},
    )
    await s.ok("DELETE", "/v1/accounts/ops/posters/tom", 204, token=ADMIN_TOKEN)
    t["nina"] = await s.person("nina")  # after the rule: enrolled in ops on creation
    await s.settle()
    for i in range(5):
        await s.post(t["pat"], f"update {i}", as_="ops")
    await s.post(t["nina"], "hello all", visibility="public")
    # Settled around leo's creation, so which of ops' posts are routed to leo never depends
    # on the workers' timing: routing reads the current follow records, so a post of ops'
    # partition fanned out after leo's enrolment was projected would reach leo too.
    await s.settle()
    t["leo"] = await s.person("leo", email="leo@example.com")
    await s.settle()
    await s.ok("PATCH", "/v1/accounts/leo", token=ADMIN_TOKEN, json={"active": False})
    await s.ok("PATCH", "/v1/accounts/eve", token=ADMIN_TOKEN, json={"active": False})
    await s.ok("PATCH", "/v1/accounts/eve", token=ADMIN_TOKEN, json={"active": True})
    t["tom_old"] = t["tom"]
    t["tom"] = (await s.ok("POST", "/v1/accounts/tom/token", token=ADMIN_TOKEN))["token"]
    cron = await s.ok("POST", "/v1/me/tokens", 201, token=t["pat"], json={"name": "cron"})
    old = await s.ok("POST", "/v1/me/tokens", 201, token=t["pat"], json={"name": "old"})
    await s.ok("DELETE", f"/v1/me/tokens/{old['id']}", 204, token=t["pat"])
    t["pat_cron"], t["pat_old"] = cron["token"], old["token"]
    t["carol"] = await s.person("carol", "auditor")
    await s.ok("GET", "/v1/audit", token=t["carol"])
    await s.post(t["pat"], "after the lifecycle changes", as_="ops")
    await incidents(s, t["pat"])
    await s.settle()
    await _rollcalls(s, t)
    return t


async def incidents(s: System, pat: str) -> None:
    """Components, a public incident from open to resolved and reopened, an internal one,
    and the status page's look."""
    for name in ("API", "Web"):
        await s.ok(
            "PUT", f"/v1/accounts/ops/components/{name}", token=pat, json={"status": "operational"}
        )
    opened = await s.ok(
        "POST",
        "/v1/incidents",
        201,
        token=pat,
        json={
            "as": "ops",
            "title": "API errors",
            "status": "investigating",
            "impact": "major",
            "text": "looking",
            "components": {"API": "partial_outage"},
        },
    )
    path = f"/v1/incidents/{opened['id']}/updates"
    for status in ("identified", "resolved", "monitoring", "resolved"):
        body = {"status": status, "text": status, "components": {"API": "operational"}}
        await s.ok("POST", path, 202, token=pat, json=body)
    await s.ok(
        "POST",
        "/v1/incidents",
        201,
        token=pat,
        json={
            "as": "ops",
            "title": "replica lag",
            "status": "identified",
            "impact": "minor",
            "text": "internal",
            "visibility": "internal",
        },
    )
    await s.ok(
        "PATCH",
        "/v1/accounts/ops",
        token=pat,
        json={"display_name": "Operations", "accent_color": "#0a66c2"},
    )


async def _rollcalls(s: System, t: dict[str, str]) -> None:
    """Two roll-calls as `ops` (merged at read, so its audience is walked without homes):
    answers, a change of mind, a proxy answer, help handled, an extension and a close."""
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    options = [
        {"key": "1", "label": "safe", "kind": "ok"},
        {"key": "2", "label": "need help", "kind": "help"},
        {"key": "3", "label": "away", "kind": "other"},
    ]
    drill = await s.post(
        t["pat"],
        "fire drill: are you safe?",
        as_="ops",
        rollcall={"options": options, "deadline": soon},
    )
    other = await s.post(
        t["pat"],
        "power cut: are you safe?",
        as_="ops",
        rollcall={"options": options, "deadline": soon},
    )
    await s.settle()  # the audiences are recorded
    path, closed = f"/v1/rollcalls/{drill['id']}", f"/v1/rollcalls/{other['id']}"
    await s.ok("POST", f"{path}/responses", token=t["mia"], json={"option": "1"})
    await s.ok("POST", f"{path}/responses", token=t["tom"], json={"option": "1"})
    await s.ok("POST", f"{path}/responses", token=t["tom"], json={"option": "3", "note": "wfh"})
    await s.ok("POST", f"{path}/responses", token=t["nina"], json={"option": "2"})
    await s.ok("PUT", f"{path}/responses/carol", token=t["pat"], json={"option": "1"})
    await s.ok("POST", f"{path}/help/nina/handled", token=ADMIN_TOKEN, json={"note": "fine"})
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    await s.ok("POST", f"{path}/extend", token=t["pat"], json={"deadline": later})
    await s.ok("POST", f"{closed}/responses", token=t["nina"], json={"option": "2"})
    await _from_outside(s, other["id"])
    await s.ok("POST", f"{closed}/close", token=ADMIN_TOKEN)
    await s.settle()
    await _escalation(s, t, options, soon)


async def _escalation(s: System, t: dict[str, str], options: Any, soon: str) -> None:
    policy = "/v1/escalation-policies/drill"
    first = {"steps": [{"after_s": 600, "to": "recipient", "channels": "all"}]}
    await s.ok("PUT", policy, token=ADMIN_TOKEN, json=first)
    steps = [*first["steps"], {"after_s": 1200, "to": "manager", "channels": "chosen"}]
    await s.ok(
        "PUT", policy, token=ADMIN_TOKEN, json={"steps": steps, "max_sends_per_recipient": 3}
    )
    for person in ("nina", "tom", "carol"):
        await s.ok("PATCH", f"/v1/accounts/{person}", token=ADMIN_TOKEN, json={"manager": "pat"})
    await s.ok("PATCH", "/v1/accounts/carol", token=ADMIN_TOKEN, json={"manager": None})
    opened = await s.post(
        t["pat"],
        "gas leak: are you safe?",
        as_="ops",
        rollcall={"options": options, "deadline": soon, "policy": "drill"},
    )
    await s.settle()  # the audience recorded, the steps armed
    rc = opened["id"]
    await s.ok("POST", f"/v1/rollcalls/{rc}/responses", token=t["mia"], json={"option": "1"})
    firer = Firer(s.redis, s.settings)
    for step in ("s0l0", "s1l0"):
        await firer.fire(EscalationDue(rc, step))
    await s.ok("POST", f"/v1/rollcalls/{rc}/remind", 202, token=t["pat"])
    p = keys.partition_of("ops", s.settings.partitions)
    for member in texts(await s.redis.zrange(keys.rollcall_timers(p), 0, -1)):
        due = decode_due(member)
        if due.rollcall == rc and due.round.startswith("r"):
            await firer.fire(due)
    await s.ok("DELETE", policy, 204, token=ADMIN_TOKEN)
    await s.settle()


async def _from_outside(s: System, rollcall: str) -> None:
    """Answers from outside the app. No delivery worker runs here, so the link and the reply
    codes it would have sent are made as it makes them (muster.answerlinks)."""
    links = Links(s.redis, s.settings.partitions)
    async with s.redis.pipeline(transaction=False) as pipe:
        link = await links.mint(pipe, rollcall, "mia", "email", ttl_s=3600)
        await pipe.execute()
    page = await s.call("GET", f"/r/{link}")
    found = re.search(r'name="token" value="([^"]+)"', page.text)
    assert found is not None
    form = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "Mozilla/5.0"}
    pressed = await s.call(
        "POST", f"/r/{link}", content=urlencode({"option": "1", "token": found[1]}), headers=form
    )
    assert "Please confirm" in pressed.text  # at once after the "delivery": suspect
    phone = "+15551234567"  # pat's
    await links.allocate_codes(phone, rollcall, "pat", 3, expires_ms=now_ms() + 3_600_000)
    params = {"MessageSid": "SM" + "5" * 32, "From": phone, "To": "+15550001111", "Body": "STOP"}
    url = s.settings.public_url.rstrip("/") + "/v1/inbound/sms"
    signed = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(url, params),
    }
    stopped = await s.call("POST", "/v1/inbound/sms", content=urlencode(params), headers=signed)
    assert stopped.status_code == 200
    q = keys.partition_of("pat", s.settings.partitions)
    assert await s.redis.hexists(keys.sms_opted_out(q), "pat")  # ContactPointOptedOut
    params = {"MessageSid": "SM" + "6" * 32, "From": "+15550009999", "To": "+15550001111"}
    params["Body"] = "3"  # a code from a phone nobody sent one: RollCallAnswerRejected
    signed["X-Twilio-Signature"] = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    refused = await s.call("POST", "/v1/inbound/sms", content=urlencode(params), headers=signed)
    assert "does not answer" in refused.text
