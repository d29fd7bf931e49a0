"""Subscribers without an account, end to end against the real peers: subscribe over HTTP,
confirm by the same channel (an email link's button, an SMS code, a webhook handshake),
receive the account's public posts, never an internal one, through the same delivery path
as followers (statuses, report, ids), and stop (RFC 8058 one-click, SMS STOP and START).

The mail arrives at the aiosmtpd sink, the SMS at the Twilio-compatible endpoint, the
webhooks at the HTTP receiver, which verifies every signature with `standardwebhooks`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest
from standardwebhooks.webhooks import Webhook
from twilio.request_validator import RequestValidator

from delivery.conftest import ADMIN_TOKEN, PUBLIC_URL, Peers, Stack
from delivery.peers import TwilioFake
from muster import events
from muster.subscriptions import subscription_id

pytestmark = pytest.mark.anyio


async def ops_with_poster(s: Stack) -> str:
    pat = (await s.account("pat"))["token"]
    await s.account("ops", "team")
    await s.ok("PUT", "/v1/accounts/ops/posters/pat", 204, token=ADMIN_TOKEN)
    return str(pat)


async def subscriptions(s: Stack, handle: str = "ops") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await s.ok(
        "GET", f"/v1/accounts/{handle}/subscriptions", token=ADMIN_TOKEN
    )
    return found


async def log(s: Stack) -> list[events.AnyEvent]:
    found = []
    for p in range(s.settings.partitions):
        entries: Any = await s.redis.xrange(events_key(p))
        for _, entry in entries:
            found.append(events.decode(entry[events.STREAM_FIELD]))
    return sorted(found, key=lambda e: int(e.id))


def events_key(p: int) -> str:
    from muster import keys

    return keys.events(p)


def link_in(text: str, path: str) -> str:
    """The first link under PUBLIC_URL + path in `text`, as a path for the test client."""
    found = re.search(re.escape(PUBLIC_URL + path) + r"[A-Za-z0-9._~-]+", text)
    assert found, text
    return found.group(0).removeprefix(PUBLIC_URL)


async def test_email_double_opt_in_delivery_and_one_click_unsubscribe(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    pat = await ops_with_poster(s)
    answer = await s.ok(
        "POST", "/v1/accounts/ops/subscriptions", 202, json={"email": "kim@example.test"}
    )
    assert answer == {"status": "confirmation_sent"}
    await s.delivered()
    (confirmation,) = peers.smtp.mails
    assert confirmation.recipients == ["kim@example.test"]
    assert "Confirm your subscription" in str(confirmation.message["Subject"])
    body = confirmation.message.get_body(("plain",))
    assert body is not None
    page = link_in(body.get_content(), "/subscriptions/confirm/")

    # opening the link (a mail scanner does) changes nothing; its button confirms
    (pending,) = await subscriptions(s)
    assert pending["state"] == "pending"
    shown = await s.call("GET", page)
    assert shown.status_code == 200
    assert "Confirm the subscription" in shown.text
    assert (await subscriptions(s))[0]["state"] == "pending"
    done = await s.call("POST", page)
    assert done.status_code == 200, done.text
    assert "You are subscribed" in done.text
    again = await s.call("POST", page)  # the token is used: refused, nothing changes
    assert again.status_code == 404
    (active,) = await subscriptions(s)
    assert active["state"] == "active"
    assert active["address"] == "kim@example.test"
    await s.routed()

    internal = await s.post(pat, "internal: db failover plan", as_="ops")
    public = await s.post(pat, "Checkout is slow; we are on it", as_="ops", visibility="public")
    await s.delivered()
    assert len(peers.smtp.mails) == 2  # the confirmation and the public post, nothing else
    mail = peers.smtp.mails[1].message
    sid = active["id"]
    assert mail["Message-ID"] == f"<{public['id']}.sub-{sid}.email@muster.test>"
    unsubscribe = str(mail["List-Unsubscribe"])
    assert re.fullmatch(re.escape(f"<{PUBLIC_URL}/unsubscribe/{sid}.") + r"[\w-]{43}>", unsubscribe)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # the URL as it is sent, not RFC 2047 encoded words a mail client would not read as a link
    assert f"\r\nList-Unsubscribe: {unsubscribe}\r\n".encode() in peers.smtp.mails[1].raw
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in peers.smtp.mails[1].raw
    plain = mail.get_body(("plain",))
    rich = mail.get_body(("html",))
    assert plain is not None
    assert rich is not None
    assert "Checkout is slow" in plain.get_content()
    assert f"Unsubscribe: {unsubscribe.strip('<>')}\r\n" in plain.get_content()
    assert f'<a href="{unsubscribe.strip("<>")}">Unsubscribe</a>' in rich.get_content()
    assert f"{PUBLIC_URL}/@ops/posts/{public['id']}" in plain.get_content()
    report = await s.deliveries(public["id"])
    assert report["recipients"] == [
        {"handle": f"sub-{sid}", "channel": "email", "status": "sent", "attempts": 1}
    ]
    assert (await s.deliveries(internal["id"]))["recipients"] == []

    # RFC 8058: a POST to the header's URL ends it at once; the same link again is refused
    target = unsubscribe.strip("<>").removeprefix(PUBLIC_URL)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    ended = await s.call("POST", target, content=b"List-Unsubscribe=One-Click", headers=form)
    assert ended.status_code == 200, ended.text
    reused = await s.call("POST", target, content=b"List-Unsubscribe=One-Click", headers=form)
    assert reused.status_code == 404
    (gone,) = await subscriptions(s)
    assert (gone["state"], gone["ended_how"]) == ("ended", "one_click")
    await s.post(pat, "Checkout is fixed", as_="ops", visibility="public")
    await s.delivered()
    assert len(peers.smtp.mails) == 2

    # consent is in the log: requested (network hashed, never the address), confirmed, ended
    kinds = [e for e in await log(s) if type(e).__name__.startswith("Subscription")]
    assert [type(e).__name__ for e in kinds] == [
        "SubscriptionRequested",
        "SubscriptionConfirmed",
        "SubscriptionEnded",
    ]
    requested, confirmed, ended_event = kinds
    assert isinstance(requested, events.SubscriptionRequested)
    assert requested.channel == "email"
    assert re.fullmatch(r"[0-9a-f]{32}", requested.network)
    assert "127.0.0" not in events.encode(requested).decode()
    assert isinstance(confirmed, events.SubscriptionConfirmed)
    assert confirmed.how == "email_link"
    assert isinstance(ended_event, events.SubscriptionEnded)
    assert ended_event.how == "one_click"
    assert not await s.dead()


def signed(params: dict[str, str], token: str = TwilioFake.TOKEN) -> dict[str, str]:
    url = f"{PUBLIC_URL}/v1/inbound/sms"
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(token).compute_signature(url, params),
    }


async def test_sms_code_delivery_stop_and_start(stack: Stack, peers: Peers) -> None:
    s = stack
    pat = await ops_with_poster(s)
    phone = "+15551239876"
    await s.ok("POST", "/v1/accounts/ops/subscriptions", 202, json={"phone": phone})
    await s.delivered()
    (sms,) = peers.sms.messages
    assert sms.to == phone
    code = re.search(r"\b(\d{6})\b", sms.body)
    assert code, sms.body
    assert "Reply STOP" in sms.body
    wrong = "000000" if code.group(1) != "000000" else "111111"
    refused = await s.call(
        "POST", "/v1/subscriptions/confirm", json={"phone": phone, "code": wrong}
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "wrong_code"
    await s.ok("POST", "/v1/subscriptions/confirm", json={"phone": phone, "code": code.group(1)})
    await s.routed()
    post = await s.post(pat, "Payments delayed in EU", as_="ops", visibility="public")
    await s.delivered()
    assert len(peers.sms.messages) == 2
    update = peers.sms.messages[1]
    assert update.body.startswith("@ops: Payments delayed in EU")
    assert update.body.endswith("Reply STOP to stop.")
    assert len(update.body) <= 160
    sid = subscription_id("ops", "sms", phone)
    assert update.idempotency_key == f"{post['id']}.sub-{sid}.sms"

    stop = {"From": phone, "To": TwilioFake.FROM, "Body": "Stop", "MessageSid": "SM1"}
    forged = await s.call(
        "POST", "/v1/inbound/sms", content=urlencode(stop), headers=signed(stop, "not-the-token")
    )
    assert forged.status_code == 403
    unsigned = await s.call(
        "POST",
        "/v1/inbound/sms",
        content=urlencode(stop),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert unsigned.status_code == 403
    assert (await subscriptions(s))[0]["state"] == "active"
    answered = await s.call(
        "POST", "/v1/inbound/sms", content=urlencode(stop), headers=signed(stop)
    )
    assert answered.status_code == 200
    assert answered.headers["content-type"].startswith("application/xml")
    assert "<Message>You will get no more" in answered.text
    (stopped,) = await subscriptions(s)
    assert (stopped["state"], stopped["ended_how"]) == ("ended", "sms_stop")
    await s.post(pat, "Payments still delayed", as_="ops", visibility="public")
    await s.delivered()
    assert len(peers.sms.messages) == 2

    start = {**stop, "Body": "START", "MessageSid": "SM2"}
    resumed = await s.call(
        "POST", "/v1/inbound/sms", content=urlencode(start), headers=signed(start)
    )
    assert resumed.status_code == 200
    assert (await subscriptions(s))[0]["state"] == "active"
    await s.routed()
    await s.post(pat, "Payments recovered", as_="ops", visibility="public")
    await s.delivered()
    assert len(peers.sms.messages) == 3
    assert not await s.dead()


async def test_webhook_handshake_then_signed_posts_with_an_unsubscribe_url(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    pat = await ops_with_poster(s)
    url = peers.hook("status")
    answer = await s.ok(
        "POST",
        "/v1/accounts/ops/subscriptions",
        202,
        json={"webhook_url": url, "components": ["api"]},
    )
    assert answer["status"] == "confirmation_sent"
    secret = answer["webhook_secret"]
    await s.delivered()
    (handshake,) = peers.webhooks.accepted()
    payload = Webhook(secret).verify(handshake.body, handshake.headers)
    sid = subscription_id("ops", "webhook", url)
    assert payload == {
        "type": "subscription.confirm",
        "data": {"subscription": sid, "account": "ops", "components": ["api"]},
    }
    (active,) = await subscriptions(s)
    assert active["state"] == "active"
    assert active["components"] == ["api"]
    await s.routed()

    post = await s.post(pat, "API errors at 2 %", as_="ops", visibility="public")
    await s.delivered()
    hook = peers.webhooks.accepted()[1]
    assert hook.headers["webhook-id"] == f"{post['id']}.sub-{sid}.webhook"
    delivered = Webhook(secret).verify(hook.body, hook.headers)
    assert delivered["type"] == "post.published"
    assert delivered["data"] == await s.ok("GET", f"/v1/posts/{post['id']}")
    assert delivered["unsubscribe_url"].startswith(f"{PUBLIC_URL}/unsubscribe/{sid}.")

    # a GET of the link shows a button and changes nothing; its POST ends the subscription
    target = delivered["unsubscribe_url"].removeprefix(PUBLIC_URL)
    page = await s.call("GET", target)
    assert page.status_code == 200
    assert "Unsubscribe" in page.text
    assert (await subscriptions(s))[0]["state"] == "active"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    ended = await s.call("POST", target, content=b"from=page", headers=form)
    assert ended.status_code == 200
    (gone,) = await subscriptions(s)
    assert (gone["state"], gone["ended_how"]) == ("ended", "unsubscribe_link")
    assert not await s.dead()
