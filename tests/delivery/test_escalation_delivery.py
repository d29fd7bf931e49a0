"""Escalation deliveries go out through the delivery worker like any other: email, SMS and a
signed webhook to the person asked (a reminder), email to their manager (who has not
answered), each under its own stable identity; firing a round again sends nothing more.

The rounds are fired by the escalation worker's own code (muster.escalation.firing), not by
its timer, so the test needs no clock; the delivery worker and the peers are real.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from delivery.conftest import ADMIN_TOKEN, PUBLIC_URL, Peers, Stack
from muster import keys
from muster.escalation.firing import Firer
from muster.records import EscalationDue

pytestmark = pytest.mark.anyio


async def test_a_reminder_and_a_managers_notice_arrive_on_their_channels(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    policy = {
        "steps": [
            {"after_s": 600, "to": "recipient", "channels": "all"},
            {"after_s": 1200, "to": "manager", "channels": "chosen"},
        ]
    }
    await s.ok("PUT", "/v1/escalation-policies/evac", token=ADMIN_TOKEN, json=policy)
    boss = (await s.account("boss"))["token"]
    ana_account = await s.account(
        "ana", email="ana@example.test", phone="+15551230001", webhook_url=peers.hook("ana")
    )
    await s.account("mgr", email="mgr@example.test", phone="+15551230002")
    await s.follow(ana_account["token"], "boss")  # in the app only: nothing sent for the post
    await s.ok("PATCH", "/v1/accounts/ana", token=ADMIN_TOKEN, json={"manager": "mgr"})
    await s.routed()
    deadline = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    options = [
        {"key": "1", "label": "safe", "kind": "ok"},
        {"key": "2", "label": "help", "kind": "help"},
    ]
    post = await s.post(
        boss,
        "Gas leak: are you safe?",
        rollcall={"options": options, "deadline": deadline, "policy": "evac"},
    )
    rc = post["id"]
    await s.delivered()
    assert peers.smtp.mails == []

    firer = Firer(s.redis, s.settings)
    for round_ in ("s0l0", "s1l0"):
        assert await firer.fire(EscalationDue(rc, round_)) == 1
    await s.delivered()

    mails = {m.recipients[0]: m.message for m in peers.smtp.mails}
    assert set(mails) == {"ana@example.test", "mgr@example.test"}
    reminder = mails["ana@example.test"]
    assert reminder["Message-ID"] == f"<{rc}-s0l0.ana.email@muster.test>"
    plain = reminder.get_body(("plain",))
    assert plain is not None
    assert "Reminder: you have not answered this roll-call yet." in plain.get_content()
    assert f"{PUBLIC_URL}/v1/posts/{rc}" in plain.get_content()
    notice = mails["mgr@example.test"]
    assert notice["Message-ID"] == f"<{rc}-s1l0-ana.mgr.email@muster.test>"
    assert "@ana has not answered this roll-call yet." in notice["Subject"]
    # the reminder says how to answer, as the post's own message would; the manager's not
    assert f"{PUBLIC_URL}/r/" in plain.get_content()
    notice_plain = notice.get_body(("plain",))
    assert notice_plain is not None
    assert "/r/" not in notice_plain.get_content()

    (sms,) = peers.sms.messages  # ana's (`all`); the manager takes DMs by app and email only
    assert (sms.to, sms.idempotency_key) == ("+15551230001", f"{rc}-s0l0.ana.sms")
    assert "Reminder" in sms.body

    (hook,) = peers.webhooks.accepted()
    assert hook.headers["webhook-id"] == f"{rc}-s0l0.ana.webhook"
    payload = Webhook(ana_account["webhook_secret"]).verify(hook.body, hook.headers)
    assert payload["type"] == "rollcall.escalated"
    assert payload["data"]["id"] == rc
    assert payload["data"]["text"].startswith("Reminder:")
    assert payload["respond_url"].startswith(f"{PUBLIC_URL}/v1/rollcalls/callback/")

    # statuses, where GET …/deliveries-style reads find them
    q = keys.partition_of("ana", s.settings.partitions)
    status: Any = await s.redis.hget(keys.delivery_status(q, f"{rc}-s0l0"), "ana:email")
    assert bytes(status).startswith(b"sent|1|")

    # and in the roll-call's escalation deliveries, for those who run it
    found = await s.ok("GET", f"/v1/rollcalls/{rc}/deliveries", token=boss)
    assert [(d["id"], d["round"], d["about"], d["status"]) for d in found["deliveries"]] == [
        (f"{rc}-s0l0.ana.email", "s0l0", "ana", "sent"),
        (f"{rc}-s0l0.ana.sms", "s0l0", "ana", "sent"),
        (f"{rc}-s0l0.ana.webhook", "s0l0", "ana", "sent"),
        (f"{rc}-s1l0-ana.mgr.email", "s1l0", "ana", "sent"),
    ]
    assert found["totals"]["email"] == {"pending": 0, "sent": 2, "logged": 0, "failed": 0}
    page = await s.ok(
        "GET",
        f"/v1/rollcalls/{rc}/deliveries",
        token=boss,
        params={"limit": 2, "after": f"{rc}-s0l0.ana.email", "status": "sent"},
    )
    assert [d["channel"] for d in page["deliveries"]] == ["sms", "webhook"]
    ana = ana_account["token"]
    assert (await s.call("GET", f"/v1/rollcalls/{rc}/deliveries", token=ana)).status_code == 404

    # fired again (a reclaimed round): nobody is told twice, nothing is sent again
    for round_ in ("s0l0", "s1l0"):
        assert await firer.fire(EscalationDue(rc, round_)) == 0
    await s.delivered()
    assert len(peers.smtp.mails) == 2
    assert len(peers.sms.messages) == 1
    assert len(peers.webhooks.accepted()) == 1
    assert not await s.dead()
