"""Incident updates reach people on their channels like every post: a follower by email, and
subscribers without an account, limited to components when they chose some on the status
page's form (end to end: the form, the email link's button, the SMTP sink)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from delivery.conftest import Peers, Stack
from delivery.test_subscribers import link_in, ops_with_poster, subscriptions

pytestmark = pytest.mark.anyio

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def confirm_by_mail(s: Stack, peers: Peers, address: str) -> None:
    await s.delivered()
    (mail,) = [m for m in peers.smtp.mails if m.recipients == [address]]
    body = mail.message.get_body(("plain",))
    assert body is not None
    done = await s.call("POST", link_in(body.get_content(), "/subscriptions/confirm/"))
    assert done.status_code == 200, done.text


def received(peers: Peers, address: str) -> list[str]:
    """The plain bodies of the updates (not confirmations) mailed to `address`."""
    out = []
    for mail in peers.smtp.mails:
        if mail.recipients == [address] and "Confirm" not in str(mail.message["Subject"]):
            body = mail.message.get_body(("plain",))
            assert body is not None
            out.append(body.get_content())
    return out


async def test_updates_reach_followers_and_subscribers_of_their_components(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    pat = await ops_with_poster(s)
    fan = (await s.account("fan", email="fan@example.test"))["token"]
    await s.ok("PUT", "/v1/me/follows/ops", token=fan, json={"channels": ["app", "email"]})
    for name in ("API", "Checkout"):
        await s.ok(
            "PUT", f"/v1/accounts/ops/components/{name}", token=pat, json={"status": "operational"}
        )
    # everything, by the JSON route; only Checkout, by the status page's form
    await s.ok("POST", "/v1/accounts/ops/subscriptions", 202, json={"email": "all@example.test"})
    page = await s.call("GET", "/@ops")
    assert 'name="components" value="Checkout"' in page.text
    form = urlencode(
        {"channel": "email", "address": "shop@example.test", "components": "Checkout"}
    ).encode()
    asked = await s.call("POST", "/@ops/subscribe", content=form, headers=FORM)
    assert asked.status_code == 202, asked.text
    await confirm_by_mail(s, peers, "all@example.test")
    await confirm_by_mail(s, peers, "shop@example.test")
    states = {sub["address"]: (sub["state"], sub["components"]) for sub in await subscriptions(s)}
    assert states == {
        "all@example.test": ("active", []),
        "shop@example.test": ("active", ["Checkout"]),
    }
    await s.routed()

    async def update(incident: str | None, text: str, **body: Any) -> str:
        if incident is None:
            opened = {"as": "ops", "title": "API errors", "status": "investigating",
                      "impact": "major", "text": text, **body}  # fmt: skip
            found: str = (await s.ok("POST", "/v1/incidents", 201, token=pat, json=opened))["id"]
            return found
        body = {"status": "identified", "text": text, **body}
        await s.ok("POST", f"/v1/incidents/{incident}/updates", 202, token=pat, json=body)
        return incident

    iid = await update(None, "API requests fail.", components={"API": "partial_outage"})
    await update(iid, "Checkout is hit too.", components={"Checkout": "major_outage"})
    await update(iid, "A bad deploy; rolling back.")  # names no component: about everything
    await s.ok(
        "POST", "/v1/incidents", 201, token=pat,
        json={"as": "ops", "title": "INTERNAL replica lag", "status": "identified",
              "impact": "critical", "text": "staff only", "visibility": "internal"},
    )  # fmt: skip
    await s.delivered()

    def says(address: str) -> list[str]:
        known = [*TEXTS, "staff only"]
        return [next((t for t in known if t in body), body) for body in received(peers, address)]

    assert sorted(says("all@example.test")) == sorted(TEXTS)
    assert sorted(says("shop@example.test")) == sorted(TEXTS[1:])  # not the API-only one
    assert sorted(says("fan@example.test")) == sorted([*TEXTS, "staff only"])  # a member
    for body in received(peers, "all@example.test"):
        assert "API errors —" in body  # the incident's title and status travel with it
    assert not await s.dead()


TEXTS = ["API requests fail.", "Checkout is hit too.", "A bad deploy; rolling back."]
