"""Each channel end to end against a real peer: HTTP API → timeline routing → delivery worker.

A team `ops` posts; followers chose channels and have contact points. The mail arrives at an
aiosmtpd server, the SMS at a Twilio-compatible endpoint, the webhook at an HTTP receiver,
where its signature is checked with the `standardwebhooks` library, and each carries the
identity the guarantees rely on (Message-ID, webhook-id) and what docs/api.md says it carries.
"""

from __future__ import annotations

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from delivery.conftest import ADMIN_TOKEN, PUBLIC_URL, OpenStack, Peers, Stack
from delivery.peers import SmtpSink
from muster import events, keys
from muster.records import DeliveryRequest, encode_request
from muster.settings import Settings

pytestmark = pytest.mark.anyio


async def test_one_post_reaches_every_channel_with_its_identity(stack: Stack, peers: Peers) -> None:
    s = stack
    pat = (await s.account("pat"))["token"]
    mia = (await s.account("mia", email="mia@example.test", phone="+15551230001"))["token"]
    tom_account = await s.account("tom", webhook_url=peers.hook("tom"))
    tom = tom_account["token"]
    await s.account("ops", "team")
    await s.ok("PUT", "/v1/accounts/ops/posters/pat", 204, token=ADMIN_TOKEN)
    await s.follow(mia, "ops", "email", "sms")
    await s.follow(tom, "ops", "webhook")
    await s.routed()

    post = await s.post(
        pat, "db failover at 14:00 — expect 2 min of errors", as_="ops", severity="warning"
    )
    await s.delivered()

    # email
    (mail,) = peers.smtp.mails
    assert mail.recipients == ["mia@example.test"]
    assert mail.sender == "alerts@muster.test"
    message = mail.message
    assert message["Message-ID"] == f"<{post['id']}.mia.email@muster.test>"
    assert message["To"] == "mia@example.test"
    assert (
        message["Subject"]
        == "[WARNING] @ops (by @pat): db failover at 14:00 — expect 2 min of errors"
    )
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert "db failover at 14:00" in plain.get_content()
    assert "db failover at 14:00" in html.get_content()
    assert f"{PUBLIC_URL}/v1/posts/{post['id']}" in plain.get_content()

    # sms
    (sms,) = peers.sms.messages
    assert sms.to == "+15551230001"
    assert sms.sender == "+15550001111"
    assert sms.body.startswith("[WARNING] @ops: db failover at 14:00")
    assert sms.body.endswith(f"{PUBLIC_URL}/v1/posts/{post['id']}")
    assert len(sms.body) <= 160
    assert sms.idempotency_key == f"{post['id']}.mia.sms"

    # webhook, verified as a receiver would
    (hook,) = peers.webhooks.accepted()
    assert hook.path == "/hooks/tom"
    assert hook.headers["webhook-id"] == f"{post['id']}.tom.webhook"
    payload = Webhook(tom_account["webhook_secret"]).verify(hook.body, hook.headers)
    assert payload == {
        "type": "post.published",
        "data": await s.ok("GET", f"/v1/posts/{post['id']}", token=tom),
    }
    assert hook.headers["content-type"] == "application/json"
    with pytest.raises(Exception, match="signature"):
        Webhook(tom_account["webhook_secret"]).verify(hook.body + b" ", hook.headers)

    assert not await s.dead()


async def test_a_dm_reaches_its_recipient_on_their_dm_channels_only(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    mia = (await s.account("mia"))["token"]
    tom = await s.account(
        "tom", email="tom@example.test", phone="+15551230009", webhook_url=peers.hook("tom")
    )
    await s.ok(
        "PATCH", "/v1/me", token=tom["token"], json={"dm_channels": ["app", "email", "webhook"]}
    )
    await s.routed()
    sent = await s.dm(mia, "tom", "are you on site? reply here")
    await s.delivered()

    (hook,) = peers.webhooks.accepted()
    payload = Webhook(tom["webhook_secret"]).verify(hook.body, hook.headers)
    conversation = await s.ok("GET", "/v1/dms/mia", token=tom["token"])
    assert payload == {"type": "dm.received", "data": conversation[-1]}
    assert payload["data"]["id"] == sent["id"]
    assert hook.headers["webhook-id"] == f"{sent['id']}.tom.webhook"
    (mail,) = peers.smtp.mails
    assert mail.recipients == ["tom@example.test"]
    assert mail.message["Subject"] == "Direct message from @mia"
    assert mail.message["Message-ID"] == f"<{sent['id']}.tom.email@muster.test>"
    assert peers.sms.messages == []  # sms is not among tom's DM channels
    assert not await s.dead()


async def test_an_internal_post_never_reaches_an_external_recipient(
    stack: Stack, peers: Peers
) -> None:
    """Routing never asks for it; if a request says so anyway (a bug, a hand-made entry), the
    worker refuses it without sending: internal posts are for members and admins only."""
    s = stack
    pat = (await s.account("pat"))["token"]
    await s.account("eve", role="external", webhook_url=peers.hook("eve"))
    post = await s.post(pat, "internal only")
    await s.routed()
    forged = DeliveryRequest(
        id=f"{post['id']}.eve.webhook",
        actor="pat",
        at=events.utcnow(),
        message_id=post["id"],
        kind="post",
        recipient="eve",
        channel="webhook",
    )
    await s.redis.xadd(keys.deliveries(0, "webhook"), {events.STREAM_FIELD: encode_request(forged)})
    await s.delivered()
    assert peers.webhooks.arrived == []
    report = await s.deliveries(post["id"])
    assert report["recipients"] == [
        {
            "handle": "eve",
            "channel": "webhook",
            "status": "failed",
            "attempts": 0,
            "last_error": "an internal post is not for this recipient",
        }
    ]


async def test_email_logs_in_with_the_user_in_the_smtp_url(
    delivery_settings: Settings, open_stack: OpenStack
) -> None:
    sink = SmtpSink(login=("muster", "p@ss/word"))
    await sink.start()
    try:
        url = f"smtp://muster:p%40ss%2Fword@127.0.0.1:{sink.port}?starttls=0"
        settings = msgspec.structs.replace(delivery_settings, smtp_url=url)
        async with open_stack(settings) as s:
            author = (await s.account("pat"))["token"]
            mia = await s.account("mia", email="mia@example.test")
            await s.follow(mia["token"], "pat", "email")
            post = await s.post(author, "sent through an authenticated relay")
            await s.delivered()
            assert sink.ids() == {f"<{post['id']}.mia.email@muster.test>": 1}
            assert sink.logins == ["muster"]  # one session, kept
            await s.post(author, "and again, on the same session")
            await s.delivered()
            assert len(sink.mails) == 2
            assert sink.logins == ["muster"]
    finally:
        await sink.stop()
