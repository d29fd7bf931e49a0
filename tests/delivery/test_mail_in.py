"""Inbound mail: replies to Muster's email, through a real SMTP conversation with the mail-in
listener (smtplib on loopback) and through Mailgun's signed inbound webhook.

The api, the timeline and delivery workers run as in the other delivery tests; emails go to
the SMTP sink (peers.py), and a test replies to the Reply-To the delivered email carries,
as a mail client would. The mail-in listener runs in this event loop on its own ApiState
(`opening.open_state`, what `muster mail-in` builds), like a separate process on the same Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import smtplib
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from api.conftest import snapshot
from redis_server import free_port

from delivery.conftest import OpenStack, Peers, Stack, until
from muster import events, keys
from muster.api import inboundmail, mailin, opening
from muster.api.replytext import automated, parse, reply_text
from muster.ids import lowest_id_at
from muster.replies import ReplyAddresses
from muster.settings import Settings

pytestmark = pytest.mark.anyio

SECRET = "mail-in-secret-Zq8Xv2Lk7Rp4Nt9Wb6Cy1Mh5Jd0SfGe"
MAILGUN_KEY = "key-mailgun-signing-3f9a1c7e5b2d8046"
DOMAIN = "reply.muster.test"


@pytest.fixture
def mail_settings(delivery_settings: Settings) -> Settings:
    return msgspec.structs.replace(
        delivery_settings,
        mail_in_secret=SECRET,
        mail_in_domain=DOMAIN,
        mailgun_signing_key=MAILGUN_KEY,
        mail_in_max_bytes=64 * 1024,
    )


class MailInStack:
    """The stack, the mail-in listener on a loopback port, and a mail client for it."""

    def __init__(self, stack: Stack, peers: Peers, port: int) -> None:
        self.stack = stack
        self.peers = peers
        self.port = port

    def emailed(self, to: str, message_id: str) -> EmailMessage:
        """The email the sink got for `to` carrying the post or DM `message_id`."""
        for mail in self.peers.smtp.mails:
            if mail.recipients == [to] and str(mail.message["Message-ID"]).startswith(
                f"<{message_id}."
            ):
                return mail.message
        raise AssertionError(f"no email to {to} for {message_id}")

    async def send(self, data: bytes, rcpt: str, mail_from: str) -> dict[str, tuple[int, bytes]]:
        """One SMTP conversation: MAIL, RCPT, DATA; the refused recipients (smtplib's)."""

        def talk() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
                refused: Any = client.sendmail(mail_from, [rcpt], data)
                return dict(refused)

        return await asyncio.to_thread(talk)

    async def events(self, kind: type[Any]) -> list[Any]:
        found = []
        for p in range(self.stack.settings.partitions):
            entries: Any = await self.stack.redis.xrange(keys.events(p))
            found += [events.decode(fields[events.STREAM_FIELD]) for _, fields in entries]
        return [e for e in found if isinstance(e, kind)]


@asynccontextmanager
async def mail_in(settings: Settings) -> AsyncIterator[int]:
    """The listener on a free loopback port (yielded), as `muster mail-in` runs it."""
    st = await opening.open_state(settings)
    replies = inboundmail.reply_addresses(st)
    assert replies is not None
    listener = mailin.MailIn(st, replies)
    port = free_port()
    await listener.start("127.0.0.1", port)
    try:
        yield port
    finally:
        await listener.stop()
        await st.redis.aclose()


@pytest.fixture
async def mail(
    mail_settings: Settings, open_stack: OpenStack, peers: Peers
) -> AsyncIterator[MailInStack]:
    async with open_stack(mail_settings) as stack, mail_in(mail_settings) as port:
        yield MailInStack(stack, peers, port)


def reply(
    to: EmailMessage,
    sender: str,
    text: str,
    *,
    subject: str | None = None,
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
) -> tuple[bytes, str]:
    """A reply as a mail client writes it (quoting the original below); its bytes and the
    address it goes to (the original's Reply-To)."""
    original = to.get_body(preferencelist=("plain",))
    assert original is not None
    quoted = "\n".join("> " + line for line in str(original.get_content()).splitlines())
    answer = EmailMessage()
    answer["From"] = f"Someone <{sender}>"
    answer["To"] = str(to["Reply-To"])
    answer["Subject"] = subject or f"Re: {to['Subject']}"
    answer["Message-ID"] = message_id or make_msgid(domain="client.test")
    answer["In-Reply-To"] = str(to["Message-ID"])
    for name, value in (headers or {}).items():
        answer[name] = value
    answer.set_content(
        f"{text}\n\n-- \nSent from my phone\n\n"
        f"On Sun, 6 Dec 2026 at 09:00, Muster <alerts@muster.test> wrote:\n{quoted}\n"
    )
    return answer.as_bytes(policy=SMTP), str(to["Reply-To"])


async def people(s: Stack) -> tuple[str, str]:
    """bob posts; mia follows him by email. Their tokens."""
    bob = (await s.account("bob", email="bob@example.test"))["token"]
    mia = (await s.account("mia", email="Mia@Example.test"))["token"]
    await s.follow(mia, "bob", "app", "email")
    await s.ok("PATCH", "/v1/me", token=mia, json={"dm_channels": ["app", "email"]})
    await s.routed()
    return bob, mia


async def replies_to(s: Stack, post_id: str, token: str) -> list[dict[str, Any]]:
    thread = await s.ok("GET", f"/v1/posts/{post_id}/thread", token=token)
    found: list[dict[str, Any]] = thread["replies"]
    return found


async def test_a_reply_to_a_post_email_is_the_persons_reply_in_its_thread(
    mail: MailInStack,
) -> None:
    s = mail.stack
    bob, _mia = await people(s)
    post = await s.post(bob, "Fire alarm test at 14:00 in building B. Questions?")
    await s.delivered()
    email = mail.emailed("Mia@Example.test", post["id"])
    reply_to = str(email["Reply-To"])
    assert reply_to.startswith("reply+mia-")
    assert reply_to.endswith("@" + DOMAIN)
    assert len(reply_to.partition("@")[0]) <= 64

    data, rcpt = reply(email, "mia@example.test", "Does it include the car park?\nThanks")
    assert await mail.send(data, rcpt, "mia@example.test") == {}

    async def replied() -> bool:
        return bool(await replies_to(s, post["id"], bob))

    await until(replied, "the reply in the thread")
    (found,) = await replies_to(s, post["id"], bob)
    # quoted text and signature stripped; the rules of the app: her reply, internal
    assert found["text"] == "Does it include the car park?\nThanks"
    assert found["author"] == "mia"
    assert found["in_reply_to"] == post["id"]
    assert found["visibility"] == "internal"

    # the same message again (a duplicate delivery, a replay): handled once
    assert await mail.send(data, rcpt, "mia@example.test") == {}
    await s.routed()
    assert len(await replies_to(s, post["id"], bob)) == 1
    assert await mail.events(events.InboundEmailRefused) == []


async def test_a_reply_to_a_dm_email_is_a_dm_back_in_that_conversation(
    mail: MailInStack,
) -> None:
    s = mail.stack
    bob, _mia = await people(s)
    sent = await s.dm(bob, "mia", "Can you cover the 18:00 shift?")
    await s.delivered()
    email = mail.emailed("Mia@Example.test", sent["id"])
    data, rcpt = reply(email, "mia@example.test", "Yes, I can.")
    assert await mail.send(data, rcpt, "mia@example.test") == {}

    async def answered() -> bool:
        return len(await s.ok("GET", "/v1/dms/mia", token=bob)) == 2

    await until(answered, "the DM back")
    _first, back = await s.ok("GET", "/v1/dms/mia", token=bob)
    assert (back["from"], back["to"], back["text"]) == ("mia", "bob", "Yes, I can.")
    assert back["in_reply_to"] == sent["id"]


async def test_a_first_line_naming_an_option_answers_the_roll_call(mail: MailInStack) -> None:
    s = mail.stack
    bob, mia = await people(s)
    deadline = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1800))
    options = [
        {"key": "safe", "label": "I'm safe", "kind": "ok"},
        {"key": "help", "label": "I need help", "kind": "help"},
    ]
    post = await s.post(bob, "Are you safe?", rollcall={"options": options, "deadline": deadline})
    await s.delivered()
    email = mail.emailed("Mia@Example.test", post["id"])
    data, rcpt = reply(email, "mia@example.test", "I need help.\nStuck on floor 3")
    assert await mail.send(data, rcpt, "mia@example.test") == {}

    answer = await s.ok("GET", f"/v1/rollcalls/{post['id']}", token=mia)
    assert answer["answer"]["option"] == "help"
    assert answer["answer"]["channel"] == "email"
    assert answer["answer"]["note"] == "Stuck on floor 3"
    report = await s.ok("GET", f"/v1/rollcalls/{post['id']}", token=bob)
    assert report["counts"]["by_channel"] == {"email": 1}
    assert await replies_to(s, post["id"], bob) == []  # an answer, not a reply too


async def test_an_answer_by_email_to_a_closed_roll_call_is_recorded_as_refused(
    mail: MailInStack,
) -> None:
    """The answer is refused (one RollCallAnswerRejected, channel email, its Message-ID) and
    the text is a reply in the thread instead, as documented; no answer is counted."""
    s = mail.stack
    bob, _mia = await people(s)
    deadline = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1800))
    options = [
        {"key": "safe", "label": "I'm safe", "kind": "ok"},
        {"key": "help", "label": "I need help", "kind": "help"},
    ]
    post = await s.post(bob, "Are you safe?", rollcall={"options": options, "deadline": deadline})
    await s.delivered()
    email = mail.emailed("Mia@Example.test", post["id"])
    await s.ok("POST", f"/v1/rollcalls/{post['id']}/close", token=bob)
    data, rcpt = reply(email, "mia@example.test", "safe", message_id="<late-1@client.test>")
    assert await mail.send(data, rcpt, "mia@example.test") == {}
    (refused,) = await mail.events(events.RollCallAnswerRejected)
    assert (refused.channel, refused.reason, refused.rollcall, refused.recipient) == (
        "email",
        "rollcall_closed",
        post["id"],
        "mia",
    )
    assert refused.source_ref == "<late-1@client.test>"
    report = await s.ok("GET", f"/v1/rollcalls/{post['id']}", token=bob)
    assert report["counts"]["answered"] == 0
    assert [r["text"] for r in await replies_to(s, post["id"], bob)] == ["safe"]
    assert await mail.events(events.InboundEmailRefused) == []


async def test_a_reply_from_another_sender_is_refused_and_changes_nothing_else(
    mail: MailInStack,
) -> None:
    s = mail.stack
    bob, _mia = await people(s)
    post = await s.post(bob, "Who has the spare keys?")
    await s.delivered()
    email = mail.emailed("Mia@Example.test", post["id"])
    # From someone else (a forwarded email, a spoof)...
    data, rcpt = reply(email, "eve@example.test", "I do")
    assert await mail.send(data, rcpt, "eve@example.test") == {}
    # ...or her From over someone else's envelope
    data, rcpt = reply(email, "mia@example.test", "I do")
    assert await mail.send(data, rcpt, "eve@example.test") == {}
    await s.routed()
    assert await replies_to(s, post["id"], bob) == []
    refused = await mail.events(events.InboundEmailRefused)
    assert [(e.recipient, e.target, e.reason) for e in refused] == [
        ("mia", post["id"], "wrong_sender"),
        ("mia", post["id"], "wrong_sender"),
    ]


OUT_OF_OFFICE = [
    # Gmail's vacation responder
    {"Auto-Submitted": "auto-replied", "Precedence": "bulk"},
    # Exchange / Outlook: no Auto-Submitted on some versions, but these
    {"X-Auto-Response-Suppress": "All", "Subject": "Automatic reply: Are you safe?"},
    {"Subject": "Out of Office: Are you safe?"},
    {"Subject": "Auto: Are you safe?"},
    {"Subject": "Automatisk svar: Are you safe?"},
    {"Subject": "Abwesenheitsnotiz: Are you safe?"},
    {"Subject": "Réponse automatique : Are you safe?"},
    {"X-Autoreply": "yes"},
    {"Precedence": "auto_reply"},
]


@pytest.mark.parametrize("headers", OUT_OF_OFFICE)
def test_automated_replies_are_recognised(headers: dict[str, str]) -> None:
    message = EmailMessage()
    message["From"] = "mia@example.test"
    message["Subject"] = headers.pop("Subject", "Re: Are you safe?")
    for name, value in headers.items():
        message[name] = value
    message.set_content("safe")
    assert automated(parse(message.as_bytes()), "mia@example.test")


def test_a_person_s_reply_is_not_automated_and_bounces_are() -> None:
    message = EmailMessage()
    message["From"] = "mia@example.test"
    message["Subject"] = "Re: Office closed on Monday"
    message["Auto-Submitted"] = "no"
    message.set_content("safe")
    parsed = parse(message.as_bytes())
    assert not automated(parsed, "mia@example.test")
    assert automated(parsed, "")  # the null sender <>: a bounce or an auto-reply


async def test_an_out_of_office_reply_never_answers_a_roll_call(mail: MailInStack) -> None:
    s = mail.stack
    bob, mia = await people(s)
    deadline = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1800))
    options = [
        {"key": "safe", "label": "I'm safe", "kind": "ok"},
        {"key": "help", "label": "I need help", "kind": "help"},
    ]
    post = await s.post(bob, "Are you safe?", rollcall={"options": options, "deadline": deadline})
    await s.delivered()
    email = mail.emailed("Mia@Example.test", post["id"])
    data, rcpt = reply(
        email,
        "mia@example.test",
        "safe",  # an auto-reply that happens to start with an option's key
        subject="Automatic reply: Are you safe?",
        headers={"Auto-Submitted": "auto-replied"},
    )
    assert await mail.send(data, rcpt, "mia@example.test") == {}
    answer = await s.ok("GET", f"/v1/rollcalls/{post['id']}", token=mia)
    assert answer.get("answer") is None
    report = await s.ok("GET", f"/v1/rollcalls/{post['id']}", token=bob)
    assert report["counts"]["answered"] == 0
    assert await replies_to(s, post["id"], bob) == []
    (refused,) = await mail.events(events.InboundEmailRefused)
    assert (refused.reason, refused.via, refused.sender) == (
        "auto_reply",
        "smtp",
        "mia@example.test",
    )


async def test_forged_and_expired_reply_addresses_are_refused_at_rcpt(mail: MailInStack) -> None:
    s = mail.stack
    bob, _mia = await people(s)
    post = await s.post(bob, "Parking closed tomorrow")
    await s.delivered()
    email = mail.emailed("Mia@Example.test", post["id"])
    genuine = str(email["Reply-To"])
    local, _, domain = genuine.partition("@")
    handle_id, _, mac = local.rpartition("-")
    forged_mac = f"{handle_id}-{'a' if mac[0] != 'a' else 'b'}{mac[1:]}@{domain}"
    other_person = genuine.replace("reply+mia-", "reply+bob-")
    replies = ReplyAddresses(SECRET, DOMAIN, 30)
    old_id = str(lowest_id_at(int((time.time() - 31 * 86400) * 1000)))
    expired = replies.address("mia", old_id)
    other_secret = ReplyAddresses("another-secret-" + SECRET, DOMAIN, 30).address("mia", post["id"])
    before = await snapshot(s.redis)
    for address in (forged_mac, other_person, expired, other_secret, f"mia@{DOMAIN}"):
        data, _ = reply(email, "mia@example.test", "hello")

        def refused(address: str = address, data: bytes = data) -> int:
            with smtplib.SMTP("127.0.0.1", mail.port, timeout=30) as client:
                client.ehlo()
                client.mail("mia@example.test")
                code, _ = client.rcpt(address)
                return code

        assert await asyncio.to_thread(refused) == 550, address
    assert await snapshot(s.redis) == before


async def test_a_message_over_the_size_limit_is_refused(mail: MailInStack) -> None:
    s = mail.stack
    bob, _mia = await people(s)
    post = await s.post(bob, "Send me the floor plans")
    await s.delivered()
    email = mail.emailed("Mia@Example.test", post["id"])
    data, rcpt = reply(email, "mia@example.test", ("x" * 70 + "\n") * 1200)
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # declared (SIZE): at MAIL
        await mail.send(data, rcpt, "mia@example.test")
    assert refused.value.smtp_code == 552

    def undeclared() -> int:  # no SIZE given: refused once DATA passes the limit
        with smtplib.SMTP("127.0.0.1", mail.port, timeout=30) as client:
            client.ehlo()
            client.mail("mia@example.test")
            client.rcpt(rcpt)
            code, _ = client.data(data)
            return code

    assert await asyncio.to_thread(undeclared) == 552
    await s.routed()
    assert await replies_to(s, post["id"], bob) == []


def test_quoted_text_and_signatures_are_stripped() -> None:
    outlook = (
        b"From: mia@example.test\r\nSubject: RE: x\r\nContent-Type: text/plain\r\n\r\n"
        b"On my way.\r\n\r\n________________________________\r\n"
        b"From: Muster <alerts@muster.test>\r\nSent: Sunday, December 6, 2026 9:00 AM\r\n"
        b"To: mia@example.test\r\nSubject: x\r\n\r\nAre you safe?\r\n"
    )
    assert reply_text(parse(outlook)) == "On my way."
    html = (
        b"From: mia@example.test\r\nSubject: Re: x\r\nContent-Type: text/html\r\n\r\n"
        b'<div dir="ltr">Need <b>help</b><br>floor 3</div><div class="gmail_quote">'
        b"<div>On Sun wrote:</div><blockquote>Are you safe?</blockquote></div>"
    )
    assert reply_text(parse(html)) == "Need help\nfloor 3"


# --- Mailgun ------------------------------------------------------------------------------------
def signed(fields: dict[str, str], *, key: str = MAILGUN_KEY, at: float | None = None) -> bytes:
    timestamp = str(int(time.time() if at is None else at))
    token = hashlib.sha256(f"{timestamp}{fields}{time.monotonic_ns()}".encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return urlencode(
        {**fields, "timestamp": timestamp, "token": token, "signature": signature}
    ).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MAILGUN = "/v1/inbound/email/mailgun/mime"


async def test_mailgun_posts_become_replies_and_forged_stale_replayed_ones_change_nothing(
    mail: MailInStack,
) -> None:
    s = mail.stack
    bob, _mia = await people(s)
    post = await s.post(bob, "Office closed on Monday")
    await s.delivered()
    email = mail.emailed("Mia@Example.test", post["id"])
    data, rcpt = reply(email, "mia@example.test", "Noted, thanks")
    fields = {"recipient": rcpt, "sender": "mia@example.test", "body-mime": data.decode()}

    before = await snapshot(s.redis)
    forged = signed(fields, key="key-not-the-signing-key-0000000000")
    response = await s.call("POST", MAILGUN, content=forged, headers=FORM)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "bad_signature")
    unsigned = urlencode(fields).encode()
    response = await s.call("POST", MAILGUN, content=unsigned, headers=FORM)
    assert response.status_code == 403
    stale = signed(fields, at=time.time() - 600)
    response = await s.call("POST", MAILGUN, content=stale, headers=FORM)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "stale_request")
    assert await snapshot(s.redis) == before

    good = signed(fields)
    response = await s.call("POST", MAILGUN, content=good, headers=FORM)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "reply"
    await s.routed()
    (found,) = await replies_to(s, post["id"], bob)
    assert (found["author"], found["text"]) == ("mia", "Noted, thanks")

    before = await snapshot(s.redis)
    response = await s.call("POST", MAILGUN, content=good, headers=FORM)  # the same request
    assert (response.status_code, response.json()["error"]["code"]) == (403, "replayed_request")
    assert await snapshot(s.redis) == before

    # a message for no reply address of ours: 406, which Mailgun does not retry
    elsewhere = signed({**fields, "recipient": f"support@{DOMAIN}"})
    response = await s.call("POST", MAILGUN, content=elsewhere, headers=FORM)
    assert response.status_code == 406


async def test_subscribers_get_no_reply_address_and_nothing_is_added_when_off(
    mail: MailInStack,
) -> None:
    from muster.delivery.content import Content, Recipient
    from muster.delivery.email import Composer

    content = Content(kind="post", id="1" * 18, raw=b"{}")
    person = Recipient("mia", "person", "member", "mia@example.test", None, None, None)
    subscriber = Recipient("sub-0123", None, None, "x@example.test", None, None, None)
    on = Composer("alerts@muster.test", "http://muster.test", ReplyAddresses(SECRET, DOMAIN, 30))
    off = Composer("alerts@muster.test", "http://muster.test")

    def head(composer: Composer, recipient: Recipient) -> bytes:
        return composer.message("1.x.email", content, "x@example.test", recipient=recipient)[:300]

    # (render needs a post to show: compare only the per-recipient lines in front)
    on._templates.get(content.id, lambda: b"Subject: x\r\n\r\nbody")
    off._templates.get(content.id, lambda: b"Subject: x\r\n\r\nbody")
    assert b"Reply-To: reply+mia-" in head(on, person)
    assert b"Reply-To" not in head(on, subscriber)
    assert b"Reply-To" not in head(off, person)


async def test_mailgun_multipart_posts_are_read_too(mail: MailInStack) -> None:
    """Mailgun posts multipart/form-data when a message has attachments."""
    import httpx

    s = mail.stack
    bob, _mia = await people(s)
    post = await s.post(bob, "Evacuation drill at 11:00")
    await s.delivered()
    email = mail.emailed("Mia@Example.test", post["id"])
    data, rcpt = reply(email, "mia@example.test", "Understood")
    timestamp = str(int(time.time()))
    token = hashlib.sha256(data).hexdigest()[:50]
    signature = hmac.new(
        MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256
    ).hexdigest()
    fields = {"recipient": rcpt, "sender": "mia@example.test", "timestamp": timestamp}
    fields |= {"token": token, "signature": signature}
    request = httpx.Request(
        "POST",
        "http://muster.test" + MAILGUN,
        data=fields,
        files={"body-mime": ("message.mime", data, "message/rfc822")},
    )
    body = request.read()
    assert request.headers["content-type"].startswith("multipart/form-data")
    headers = {"Content-Type": request.headers["content-type"]}
    response = await s.call("POST", MAILGUN, content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "reply"
    await s.routed()
    (found,) = await replies_to(s, post["id"], bob)
    assert found["text"] == "Understood"


async def test_a_reply_to_an_incident_update_is_a_reply_in_the_incident_s_thread(
    mail: MailInStack,
) -> None:
    s = mail.stack
    bob, mia = await people(s)
    await s.team("ops", "bob")
    await s.follow(mia, "ops", "app", "email")
    await s.routed()
    opened = await s.ok(
        "POST",
        "/v1/incidents",
        201,
        token=bob,
        json={
            "as": "ops",
            "title": "VPN down",
            "status": "investigating",
            "impact": "major",
            "text": "Investigating the VPN outage",
        },
    )
    await s.delivered()
    email = mail.emailed("Mia@Example.test", opened["id"])
    data, rcpt = reply(email, "mia@example.test", "Also down in Leeds")
    assert await mail.send(data, rcpt, "mia@example.test") == {}

    async def replied() -> bool:
        return bool(await replies_to(s, opened["id"], bob))

    await until(replied, "the reply in the incident's thread")
    (found,) = await replies_to(s, opened["id"], bob)
    assert (found["author"], found["text"]) == ("mia", "Also down in Leeds")


async def test_replies_and_answers_across_partitions(
    mail_settings: Settings, open_stack: OpenStack, peers: Peers
) -> None:
    """On 4 partitions: the team posts in its partition, the people answer in theirs (the
    idempotency claim and receipt cross slots), and every reply and answer lands once."""
    settings = msgspec.structs.replace(mail_settings, partitions=4)
    async with open_stack(settings) as s, mail_in(settings) as port:
        mail = MailInStack(s, peers, port)
        bob = (await s.account("bob", email="bob@example.test"))["token"]
        await s.team("ops", "bob")
        names = ["ann", "kim", "lee", "max", "ned", "ola"]
        for name in names:
            token = (await s.account(name, email=f"{name}@example.test"))["token"]
            await s.follow(token, "ops", "app", "email")
        await s.routed()
        deadline = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1800))
        options = [
            {"key": "safe", "label": "I'm safe", "kind": "ok"},
            {"key": "help", "label": "I need help", "kind": "help"},
        ]
        question = await s.post(
            bob,
            "Are you safe?",
            as_="ops",
            rollcall={"options": options, "deadline": deadline},
        )
        notice = await s.post(bob, "Lifts out of service", as_="ops")
        await s.delivered()
        for name in names:
            address = f"{name}@example.test"
            data, rcpt = reply(mail.emailed(address, question["id"]), address, "Safe")
            assert await mail.send(data, rcpt, address) == {}
            data, rcpt = reply(mail.emailed(address, notice["id"]), address, f"ok {name}")
            assert await mail.send(data, rcpt, address) == {}
            assert await mail.send(data, rcpt, address) == {}  # a duplicate
        report = await s.ok("GET", f"/v1/rollcalls/{question['id']}", token=bob)
        assert report["counts"]["answered"] == len(names)
        assert report["counts"]["by_channel"] == {"email": len(names)}

        async def all_replied() -> bool:
            return len(await replies_to(s, notice["id"], bob)) == len(names)

        await until(all_replied, "a reply from each")
        await s.routed()
        found = await replies_to(s, notice["id"], bob)
        assert sorted(r["text"] for r in found) == sorted(f"ok {n}" for n in names)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the reply domain and its key (openssl)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={DOMAIN}", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return cert, key


async def test_mail_in_offers_starttls_with_a_certificate(
    mail_settings: Settings, open_stack: OpenStack, peers: Peers, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    settings = msgspec.structs.replace(mail_settings, mail_in_tls_cert=cert, mail_in_tls_key=key)
    trusted = ssl.create_default_context(cafile=str(cert))
    trusted.check_hostname = False  # smtplib checks the name it connected to: 127.0.0.1
    async with open_stack(settings) as s, mail_in(settings) as port:
        bob, _mia = await people(s)
        post = await s.post(bob, "Server room door left open")
        await s.delivered()
        email = MailInStack(s, peers, port).emailed("Mia@Example.test", post["id"])
        data, rcpt = reply(email, "mia@example.test", "Closed it, thanks")

        def talk() -> tuple[bool, int]:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo()
                offered = client.has_extn("starttls")
                client.starttls(context=trusted)
                client.ehlo()
                client.mail("mia@example.test")
                client.rcpt(rcpt)
                code, _ = client.data(data)
                return offered, code

        assert await asyncio.to_thread(talk) == (True, 250)

        async def replied() -> bool:
            return bool(await replies_to(s, post["id"], bob))

        await until(replied, "the reply sent over TLS")
