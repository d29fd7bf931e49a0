"""GET /v1/posts/{id}/deliveries: who may read it, what it counts, how it pages.

docs/api.md: author, posters of `as`, admin → 200 `{totals: {channel: {pending, sent, logged, failed}},
recipients: [{handle, channel, status, attempts, last_error?}]}`; anyone else who can see
the post → 403; a post that does not exist or is not visible → 404, never a hint.
"""

from __future__ import annotations

from typing import Any

import pytest

from delivery.conftest import ADMIN_TOKEN, Peers, Stack
from muster import keys

pytestmark = pytest.mark.anyio


async def scene(s: Stack, peers: Peers) -> dict[str, Any]:
    """ops (posters pat, quinn) posts internally to mia (email+sms), tom (webhook) and a
    webhook that answers 410 Gone (ann); sam is another member, eve an external."""
    tokens = {name: (await s.account(name))["token"] for name in ("pat", "quinn", "sam")}
    tokens["eve"] = (await s.account("eve", role="external"))["token"]
    await s.account("ops", "team")
    for poster in ("pat", "quinn"):
        await s.ok("PUT", f"/v1/accounts/ops/posters/{poster}", 204, token=ADMIN_TOKEN)
    mia = await s.account("mia", email="mia@example.test", phone="+15551230001")
    tom = await s.account("tom", webhook_url=peers.hook("tom"))
    ann = await s.account("ann", webhook_url=peers.hook("ann"))
    await s.follow(mia["token"], "ops", "email", "sms")
    await s.follow(tom["token"], "ops", "webhook")
    await s.follow(ann["token"], "ops", "webhook")
    peers.webhooks.status_for["/hooks/ann"] = 410
    post = await s.post(tokens["pat"], "internal incident note", as_="ops")
    await s.delivered()
    return {"post": post["id"], "tokens": tokens, "mia": mia["token"]}


async def test_totals_and_recipients(stack: Stack, peers: Peers) -> None:
    s = stack
    found = await scene(s, peers)
    report = await s.deliveries(found["post"], token=found["tokens"]["pat"])
    assert report["totals"] == {
        "email": {"pending": 0, "sent": 1, "logged": 0, "failed": 0},
        "sms": {"pending": 0, "sent": 1, "logged": 0, "failed": 0},
        "webhook": {"pending": 0, "sent": 1, "logged": 0, "failed": 1},
    }
    assert report["recipients"] == [
        {
            "handle": "ann",
            "channel": "webhook",
            "status": "failed",
            "attempts": 1,
            "last_error": "webhook answered 410 Gone: webhook disabled until its URL changes",
        },
        {"handle": "mia", "channel": "email", "status": "sent", "attempts": 1},
        {"handle": "mia", "channel": "sms", "status": "sent", "attempts": 1},
        {"handle": "tom", "channel": "webhook", "status": "sent", "attempts": 1},
    ]
    page = await s.deliveries(found["post"], limit=2)
    assert [(r["handle"], r["channel"]) for r in page["recipients"]] == [
        ("ann", "webhook"),
        ("mia", "email"),
    ]
    assert page["totals"] == report["totals"]  # totals always count everyone
    rest = await s.deliveries(found["post"], limit=2, after="mia:email")
    assert [(r["handle"], r["channel"]) for r in rest["recipients"]] == [
        ("mia", "sms"),
        ("tom", "webhook"),
    ]
    failed = await s.deliveries(found["post"], status="failed")
    assert [r["handle"] for r in failed["recipients"]] == ["ann"]
    bad = await s.call("GET", f"/v1/posts/{found['post']}/deliveries?limit=0", token=ADMIN_TOKEN)
    assert bad.status_code == 422


async def test_who_may_read_it(stack: Stack, peers: Peers) -> None:
    s = stack
    found = await scene(s, peers)
    path = f"/v1/posts/{found['post']}/deliveries"
    tokens = found["tokens"]
    assert (await s.call("GET", path, token=tokens["pat"])).status_code == 200  # author
    assert (await s.call("GET", path, token=tokens["quinn"])).status_code == 200  # poster of ops
    assert (await s.call("GET", path, token=ADMIN_TOKEN)).status_code == 200
    refused = await s.call("GET", path, token=tokens["sam"])  # a member who can see the post
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "not_allowed"
    assert (await s.call("GET", path, token=found["mia"])).status_code == 403  # a recipient
    hidden = await s.call("GET", path, token=tokens["eve"])  # cannot see an internal post
    assert hidden.status_code == 404
    missing = await s.call("GET", "/v1/posts/123456789012345678/deliveries", token=ADMIN_TOKEN)
    assert missing.status_code == 404
    assert hidden.json()["error"] == missing.json()["error"] | {
        "message": hidden.json()["error"]["message"]
    }
    assert (await s.call("GET", path)).status_code == 401
    assert (await s.call("GET", "/v1/posts/nope/deliveries", token=ADMIN_TOKEN)).status_code == 404


async def test_pending_until_delivered_and_documented_in_openapi(stack: Stack) -> None:
    s = stack
    author = (await s.account("pat"))["token"]
    mia = await s.account("mia", email="mia@example.test")
    await s.follow(mia["token"], "pat", "email")
    post = (await s.post(author, "hello"))["id"]
    await s.routed()
    await s.redis.hset(keys.delivery_status(0, "999"), "x:email", "sent|1|")  # another post's
    report = await s.deliveries(post)
    assert report["totals"]["email"]["sent"] + report["totals"]["email"]["pending"] == 1
    await s.delivered()
    assert (await s.deliveries(post))["totals"]["email"] == {
        "pending": 0,
        "sent": 1,
        "logged": 0,
        "failed": 0,
    }
    spec = await s.ok("GET", "/openapi.json")
    operation = spec["paths"]["/v1/posts/{post_id}/deliveries"]["get"]
    assert {"200", "401", "403", "404"} <= set(operation["responses"])
    assert "DeliveriesOut" in spec["components"]["schemas"]
