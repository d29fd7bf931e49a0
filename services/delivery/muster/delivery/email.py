"""Email over SMTP with aiosmtplib: a small pool of long-lived sessions, plain text + HTML;
with no SMTP server configured, a development mailbox instead.

MUSTER_SMTP_URL says where and how: `smtp://[user:pass@]host[:port][?starttls=1|0]`
(STARTTLS required with 1, never with 0, used when the server offers it otherwise) or
`smtps://[user:pass@]host[:port]` (TLS from the first byte); AUTH when a user is given.
MUSTER_SMTP_CONNECTIONS sessions are opened on demand and kept; one that fails is closed and
replaced by a fresh one on the next send, and a kept one the server dropped meanwhile is
reconnected once on the spot.

Every message has the same `Message-ID` for a delivery — `<{delivery id}@{host of
MUSTER_PUBLIC_URL}>` — on every retry and on a resend after a crash, so mail systems and
people can tell a duplicate. A person's copy of a post or DM (not a subscriber's: they have
no account to reply as) carries a `Reply-To` naming them and the message
(muster.replies), so a reply comes back as theirs through `muster mail-in` or a provider's
inbound route. The subject carries the severity and the author. Answers:
5xx (and an address that cannot be sent to) are permanent, 4xx and lost connections
transient.

With MUSTER_SMTP_URL unset, `Mailbox` takes the sender's place: each message, exactly as it
would have been sent (To and Message-ID included), is written to `<MUSTER_DATA_DIR>/mailbox/
<delivery id>.eml` (owner-only, like the rest of the data dir), and logged with its
recipient, subject and file; its delivery is recorded as `logged`, not `sent`. A DM's file
holds its text — it is the email the recipient would have got, kept where the event log
holding the same text lives — but its log line says only that it is a DM: a DM's text, and
an internal post's, never reach the log (docs/architecture.md, guarantee 7).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import os
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import structlog

from muster.delivery.content import (
    Content,
    Recipient,
    Rendered,
    link,
    status_link,
)
from muster.errors import PermanentDeliveryError, TransientDeliveryError
from muster.replies import ReplyAddresses
from muster.settings import Settings
from muster.views import Message, Post

log = structlog.get_logger("muster.delivery.email")

SUBJECT_SNIPPET = 60


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    host: str
    port: int
    use_tls: bool
    start_tls: bool | None
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        smtps = parts.scheme == "smtps"
        starttls_raw = query.get("starttls", [""])[0].lower()
        start_tls: bool | None = None
        if starttls_raw in {"1", "true", "yes"}:
            start_tls = True
        elif starttls_raw in {"0", "false", "no"} or smtps:
            start_tls = False
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (465 if smtps else (587 if start_tls else 25)),
            use_tls=smtps,
            start_tls=start_tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def _date(created_at: str) -> str:
    return format_datetime(datetime.fromisoformat(created_at.replace("Z", "+00:00")))


def _post_parts(post: Post, url: str, answer_url: str | None = None) -> tuple[str, str, str]:
    snippet = " ".join(post.text.split())
    if len(snippet) > SUBJECT_SNIPPET:
        snippet = snippet[: SUBJECT_SNIPPET - 1].rstrip() + "…"
    who = f"@{post.as_account}" + (
        f" (by @{post.author})" if post.author != post.as_account else ""
    )
    subject = f"[{post.severity.upper()}] {who}: {snippet}"
    plain = f"{post.severity.upper()} from {who}\n\n{post.text}\n\nOpen in Muster: {url}\n"
    body = html.escape(post.text).replace("\n", "<br>\n")
    rich = (
        f"<p><strong>{post.severity.upper()}</strong> from {html.escape(who)}</p>\n"
        f'<p>{body}</p>\n<p><a href="{html.escape(url)}">Open in Muster</a></p>\n'
    )
    if answer_url is not None and post.rollcall is not None:
        labels = " / ".join(o.label for o in post.rollcall.options)
        plain += f"\nAnswer ({labels}): {answer_url}\n"
        rich += (
            f'<p><strong><a href="{html.escape(answer_url)}">Answer: {html.escape(labels)}'
            "</a></strong></p>\n"
        )
    return subject, plain, rich


def _dm_parts(message: Message, url: str) -> tuple[str, str, str]:
    subject = f"Direct message from @{message.from_}"
    plain = f"@{message.from_} wrote to you:\n\n{message.text}\n\nReply in Muster: {url}\n"
    body = html.escape(message.text).replace("\n", "<br>\n")
    rich = (
        f"<p>@{html.escape(message.from_)} wrote to you:</p>\n<p>{body}</p>\n"
        f'<p><a href="{html.escape(url)}">Reply in Muster</a></p>\n'
    )
    return subject, plain, rich


def render(content: Content, *, mail_from: str, public_url: str) -> bytes:
    """Everything but the per-recipient headers (To, Message-ID), CRLF line ends (a
    roll-call's, with each person's answer link, is an answer_mail)."""
    url = link(public_url, content)
    if content.message is not None:
        subject, plain, rich = _dm_parts(content.message, url)
        created = content.message.created_at
    else:
        assert content.post is not None
        subject, plain, rich = _post_parts(content.post, url)
        created = content.post.created_at
    mail = EmailMessage(policy=SMTP)
    mail["From"] = mail_from
    mail["Subject"] = subject
    mail["Date"] = _date(created)
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(plain)
    mail.add_alternative(rich, subtype="html")
    # A boundary made from the content, not at random: a resend is byte-for-byte the same.
    mail.set_boundary("=_muster_" + hashlib.sha256(content.raw).hexdigest()[:32])
    return mail.as_bytes()


_LINK = "\x00link\x00"  # where a recipient's own link goes in a template's bodies


@dataclass(frozen=True, slots=True)
class LinkedMail:
    """An email rendered once per post for many recipients who each get their own link (a
    subscriber's unsubscribe link, a roll-call's answer link): each message is this with
    the link put in. The link stays literal where it matters: `List-Unsubscribe: <url>` is a
    raw header line (the email library would fold a long URL into RFC 2047 encoded words,
    which mail clients do not read as a link, RFC 2369/8058), and the two bodies are
    base64-encoded per message (C speed; a link cannot be spliced into quoted-printable,
    which breaks lines where it likes). Rendering each whole with EmailMessage cost ~1.7-2.5
    ms a message, against ~3 µs for a follower's copy of a post's one rendering."""

    head: bytes
    """From … Content-Type, the blank line and the first boundary with the plain part's headers."""
    plain: tuple[str, ...]
    middle: bytes
    rich: tuple[str, ...]
    tail: bytes
    unsubscribe: bool
    """Whether the link is also the List-Unsubscribe target (RFC 8058 one-click)."""

    def with_link(self, url: str) -> bytes:
        header = b""
        if self.unsubscribe:
            header = f"List-Unsubscribe: <{url}>\r\n".encode("ascii") + (
                b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            )
        plain = url.join(self.plain)
        rich = html.escape(url).join(self.rich)
        return b"".join((header, self.head, _base64(plain), self.middle, _base64(rich), self.tail))


def _base64(text: str) -> bytes:
    return base64.encodebytes(text.encode("utf-8")).replace(b"\n", b"\r\n")


def _linked(
    parts: tuple[str, str, str], created_at: str, mail_from: str, seed: bytes, *, unsubscribe: bool
) -> LinkedMail:
    """`parts`: subject, plain and HTML bodies, with _LINK where each recipient's link goes."""
    subject, plain, rich = parts
    boundary = "=_muster_" + hashlib.sha256(seed).hexdigest()[:32]
    mail = EmailMessage(policy=SMTP)
    mail["From"] = mail_from
    mail["Subject"] = subject
    mail["Date"] = _date(created_at)
    mail["Auto-Submitted"] = "auto-generated"
    headers = mail.as_bytes()  # no body: the encoded headers and the blank line
    assert headers.endswith(b"\r\n\r\n")
    mime = f'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="{boundary}"'
    part = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    return LinkedMail(
        head=headers[:-2] + f"{mime}\r\n\r\n--{boundary}\r\n{part.format('plain')}".encode(),
        plain=tuple(plain.replace("\n", "\r\n").split(_LINK)),
        middle=f"\r\n--{boundary}\r\n{part.format('html')}".encode("ascii"),
        rich=tuple(rich.replace("\n", "\r\n").split(_LINK)),
        tail=f"\r\n--{boundary}--\r\n".encode("ascii"),
        unsubscribe=unsubscribe,
    )


def subscriber_mail(content: Content, *, mail_from: str, public_url: str) -> LinkedMail:
    """A public post for a subscriber without an account: linked to the status page, with a
    line on why they get it and how to stop, and RFC 8058's List-Unsubscribe headers (a
    POST to the URL ends the subscription at once; a GET shows a page with a button)."""
    assert content.post is not None
    post = content.post
    url = status_link(public_url, content)
    subject, plain, rich = _post_parts(post, url)
    why = f"You get this because you subscribed to @{post.as_account}'s status updates."
    plain = plain.replace("Open in Muster:", "Read it on the status page:")
    plain += f"\n--\n{why}\nUnsubscribe: {_LINK}\n"
    rich = rich.replace(">Open in Muster<", ">Read it on the status page<")
    rich += f'<hr>\n<p>{html.escape(why)} <a href="{_LINK}">Unsubscribe</a></p>\n'
    parts = (subject, plain, rich)
    return _linked(parts, post.created_at, mail_from, content.raw, unsubscribe=True)


def answer_mail(content: Content, *, mail_from: str, public_url: str) -> LinkedMail:
    """A roll-call's post for a person asked, with their own answer link."""
    assert content.post is not None
    parts = _post_parts(content.post, link(public_url, content), _LINK)
    return _linked(parts, content.post.created_at, mail_from, content.raw, unsubscribe=False)


def render_confirmation(
    account: str, *, mail_from: str, link_to_confirm: str, created_at: str
) -> bytes:
    """The double opt-in: a link to a page whose button confirms (mail scanners open links,
    so opening it changes nothing)."""
    subject = f"Confirm your subscription to @{account}'s status updates"
    plain = (
        f"Someone, hopefully you, asked to get @{account}'s status updates at this address.\n\n"
        f"To confirm, open this page and press its button (it works for 24 hours):\n"
        f"{link_to_confirm}\n\nIf it was not you, ignore this message: nothing will be sent.\n"
    )
    rich = (
        f"<p>Someone, hopefully you, asked to get @{html.escape(account)}'s status updates "
        "at this address.</p>\n"
        f'<p><a href="{html.escape(link_to_confirm)}">Confirm the subscription</a> '
        "(the link works for 24 hours).</p>\n"
        "<p>If it was not you, ignore this message: nothing will be sent.</p>\n"
    )
    return _mail(subject, plain, rich, created_at, mail_from, link_to_confirm.encode())


def _mail(
    subject: str,
    plain: str,
    rich: str,
    created_at: str,
    mail_from: str,
    seed: bytes,
) -> bytes:
    mail = EmailMessage(policy=SMTP)
    mail["From"] = mail_from
    mail["Subject"] = subject
    mail["Date"] = _date(created_at)
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(plain)
    mail.add_alternative(rich, subtype="html")
    mail.set_boundary("=_muster_" + hashlib.sha256(seed).hexdigest()[:32])
    return mail.as_bytes()


def reply_addresses(settings: Settings) -> ReplyAddresses | None:
    """Reply addresses for people's email, when replies are taken (MUSTER_MAIL_IN_SECRET)."""
    if settings.mail_in_secret is None:
        return None
    return ReplyAddresses(
        settings.mail_in_secret, settings.reply_domain, settings.mail_in_reply_days
    )


def message_id(delivery_id: str, public_url: str) -> str:
    host = urlsplit(public_url).hostname or "muster.invalid"
    return f"<{delivery_id}@{host}>"


def _check_address(address: str) -> None:
    if any(c in address for c in "\r\n<>,") or address.count("@") != 1:
        raise PermanentDeliveryError(f"cannot send to {address!r}: not one plain address")


class _Pool:
    """MUSTER_SMTP_CONNECTIONS sessions; a slot holds None until it is (re)connected."""

    def __init__(self, target: SmtpTarget, size: int, timeout: float, local_hostname: str) -> None:
        self.target = target
        self.timeout = timeout
        self.local_hostname = local_hostname
        self.idle: asyncio.LifoQueue[aiosmtplib.SMTP | None] = asyncio.LifoQueue()
        for _ in range(size):
            self.idle.put_nowait(None)
        self.open: set[aiosmtplib.SMTP] = set()

    async def connect(self) -> aiosmtplib.SMTP:
        t = self.target
        session = aiosmtplib.SMTP(
            hostname=t.host,
            port=t.port,
            use_tls=t.use_tls,
            start_tls=t.start_tls,
            username=t.username,
            password=t.password,
            timeout=self.timeout,
            local_hostname=self.local_hostname,
        )
        try:
            await session.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            session.close()
            raise TransientDeliveryError(f"SMTP login refused: {exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            session.close()
            raise TransientDeliveryError(f"cannot connect to SMTP server: {exc}") from None
        self.open.add(session)
        return session

    def discard(self, session: aiosmtplib.SMTP | None) -> None:
        if session is not None:
            self.open.discard(session)
            session.close()

    async def close(self) -> None:
        for session in list(self.open):
            try:
                await asyncio.wait_for(session.quit(), timeout=2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                session.close()
        self.open.clear()


@dataclass(frozen=True, slots=True)
class SubscriberParts:
    """What a subscriber's message adds: the account, and the one link it carries (the
    unsubscribe link of a post, the confirmation link of a confirmation), with its time."""

    account: str
    link: str
    created_at: str = ""


class Composer:
    """The bytes of each delivery's email: one rendered template per post or DM, with the
    recipient's To and the delivery's Message-ID in front."""

    def __init__(
        self, mail_from: str, public_url: str, replies: ReplyAddresses | None = None
    ) -> None:
        self.mail_from = mail_from
        self.public_url = public_url
        self.replies = replies
        self._templates: Rendered[str, bytes] = Rendered()
        self._answer_templates: Rendered[str, LinkedMail] = Rendered()
        self._for_subscribers: Rendered[str, LinkedMail] = Rendered()

    def message(
        self,
        delivery_id: str,
        content: Content,
        to: str,
        extra: SubscriberParts | None = None,
        answer_url: str | None = None,
        *,
        recipient: Recipient | None = None,
    ) -> bytes:
        msgid = message_id(delivery_id, self.public_url)
        head = f"To: {to}\r\nMessage-ID: {msgid}\r\n"
        if extra is not None:  # a subscriber's: its own links, rendered for it
            return head.encode() + self._for_subscriber(content, extra)
        if self.replies is not None and recipient is not None and recipient.kind == "person":
            # only people with an account can reply as someone (subscribers have none)
            # an escalation's content id is not a message's: replies go to its roll-call
            about = content.post.id if content.post is not None else content.id
            head += f"Reply-To: {self.replies.address(recipient.handle, about)}\r\n"
        head_bytes = head.encode()
        if answer_url is not None:  # a roll-call's: the recipient's own answer link
            return head_bytes + self._with_answer_link(content, answer_url)
        template = self._templates.get(
            content.id,
            lambda: render(content, mail_from=self.mail_from, public_url=self.public_url),
        )
        return head_bytes + template

    def _with_answer_link(self, content: Content, answer_url: str) -> bytes:
        template = self._answer_templates.get(
            content.id,
            lambda: answer_mail(content, mail_from=self.mail_from, public_url=self.public_url),
        )
        return template.with_link(answer_url)

    def _for_subscriber(self, content: Content, extra: SubscriberParts) -> bytes:
        if content.kind == "confirm":
            return render_confirmation(
                extra.account,
                mail_from=self.mail_from,
                link_to_confirm=extra.link,
                created_at=extra.created_at,
            )
        template = self._for_subscribers.get(
            content.id,
            lambda: subscriber_mail(content, mail_from=self.mail_from, public_url=self.public_url),
        )
        return template.with_link(extra.link)


class EmailSender:
    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_url or not settings.mail_from:
            raise ValueError("email needs MUSTER_SMTP_URL and MUSTER_MAIL_FROM")
        self.settings = settings
        self.mail_from = settings.mail_from
        self.target = SmtpTarget.from_url(settings.smtp_url)
        local = urlsplit(settings.public_url).hostname or "localhost"
        self.pool = _Pool(
            self.target, settings.smtp_connections, float(settings.webhook_timeout_s), local
        )
        self.composer = Composer(settings.mail_from, settings.public_url, reply_addresses(settings))

    async def send(
        self,
        delivery_id: str,
        content: Content,
        recipient: Recipient,
        extra: SubscriberParts | None = None,
        answer_url: str | None = None,
    ) -> str | None:
        """Send; None (sent), or raise a DeliveryError."""
        to = recipient.email
        if not to:
            raise PermanentDeliveryError("no email address")
        _check_address(to)
        data = self.composer.message(
            delivery_id, content, to, extra, answer_url, recipient=recipient
        )
        options = [] if to.isascii() else ["SMTPUTF8"]
        session = await self.pool.idle.get()
        try:
            # One bound for the whole exchange (connect, MAIL, RCPT, DATA), not per command,
            # so one send never takes longer than MUSTER_WEBHOOK_TIMEOUT.
            async with asyncio.timeout(self.settings.webhook_timeout_s):
                reused = session is not None
                if session is None:
                    session = await self.pool.connect()
                try:
                    await session.sendmail(self.mail_from, [to], data, mail_options=options)
                except aiosmtplib.SMTPServerDisconnected:
                    if not reused:
                        raise
                    self.pool.discard(session)  # dropped while idle: one fresh try, now
                    session = None
                    session = await self.pool.connect()
                    await session.sendmail(self.mail_from, [to], data, mail_options=options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0] if exc.recipients else None
            code = refusal.code if refusal is not None else 550
            text = refusal.message if refusal is not None else "recipient refused"
            error = f"SMTP server refused {to}: {code} {text}"
            raise (TransientDeliveryError if 400 <= code < 500 else PermanentDeliveryError)(
                error
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise PermanentDeliveryError(f"SMTP {exc.code} {exc.message}") from None
            self.pool.discard(session)
            session = None
            raise TransientDeliveryError(f"SMTP {exc.code} {exc.message}") from None
        except aiosmtplib.SMTPNotSupported as exc:
            raise PermanentDeliveryError(f"SMTP server cannot take this message: {exc}") from None
        except ValueError as exc:
            raise PermanentDeliveryError(f"cannot send to {to!r}: {exc}") from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self.pool.discard(session)
            session = None
            raise TransientDeliveryError(f"SMTP failed: {type(exc).__name__}: {exc}") from None
        except TransientDeliveryError:
            session = None
            raise
        finally:
            self.pool.idle.put_nowait(session)
        return None

    async def aclose(self) -> None:
        await self.pool.close()


MAILBOX = "mailbox"
"""Under MUSTER_DATA_DIR: the development mailbox, one `<delivery id>.eml` per email."""

DEV_MAIL_FROM = "muster@localhost"
"""The From of mailbox messages when MUSTER_MAIL_FROM is unset too."""


class Mailbox:
    """Email with no SMTP server: written to files, logged, recorded as not sent."""

    def __init__(self, settings: Settings) -> None:
        self.directory = settings.data_dir / MAILBOX
        self.composer = Composer(
            settings.mail_from or DEV_MAIL_FROM, settings.public_url, reply_addresses(settings)
        )

    async def send(
        self,
        delivery_id: str,
        content: Content,
        recipient: Recipient,
        extra: SubscriberParts | None = None,
        answer_url: str | None = None,
    ) -> str:
        """Write the message; the note its delivery status carries (`logged`: not sent)."""
        to = recipient.email
        if not to:
            raise PermanentDeliveryError("no email address")
        _check_address(to)
        data = self.composer.message(
            delivery_id, content, to, extra, answer_url, recipient=recipient
        )
        path = self.directory / f"{delivery_id}.eml"
        try:
            await asyncio.to_thread(_write_private, path, data)
        except OSError as exc:
            raise TransientDeliveryError(f"cannot write to the mailbox: {exc}") from None
        subject = BytesHeaderParser(policy=SMTP).parsebytes(data)["Subject"]
        if content.kind == "confirm":  # its link confirms: never in the log
            log.info(
                "email not sent: subscription confirmation written to the mailbox",
                delivery=delivery_id,
                to=to,
                file=str(path),
            )
        elif content.message is not None:
            log.info(
                "email not sent: DM written to the mailbox",
                delivery=delivery_id,
                to=to,
                file=str(path),
            )
        elif content.private:
            log.info(
                "email not sent: internal post written to the mailbox",
                delivery=delivery_id,
                to=to,
                file=str(path),
            )
        else:
            log.info(
                "email not sent: written to the mailbox",
                delivery=delivery_id,
                to=to,
                subject=str(subject),
                file=str(path),
            )
        return f"not sent (MUSTER_SMTP_URL is unset): written to {path}"

    async def aclose(self) -> None:
        return None


def _write_private(path: Path, data: bytes) -> None:
    """Owner-only, complete or absent: a resend after a crash writes the same file again."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
