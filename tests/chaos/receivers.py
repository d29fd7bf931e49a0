"""The outside world a chaos run delivers to: webhook receivers, an SMS provider, a mail server.

- `WebhookReceivers`: one aiohttp server; `POST /hooks/{handle}` is that person's endpoint. It
  checks every request with the official `standardwebhooks` library and that person's
  secret (a bad signature is answered 401 and counted) and answers 200.
- `SmsProvider`: Twilio's Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`,
  basic auth, form `To`/`From`/`Body`, the delivery id in `Idempotency-Key`), 201 like Twilio.
- `MailServer`: aiosmtpd on a loopback socket; records each message (parsed).

Each of them can be told to fail for a while (`fail_for(seconds)`): the HTTP ones answer 503,
the mail server 451 to every RCPT, which Muster must treat as transient and retry. Every
request is recorded as an `Arrival` — the delivery id it carried, whose endpoint it reached,
the text it showed, and whether it was accepted — which is what the checks read.

Everything listens on 127.0.0.1 only and runs in the caller's event loop.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session
from redis_server import free_port
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

MAIL_DOMAIN = "muster.chaos.test"
"""The host of MUSTER_PUBLIC_URL: every email's Message-ID must be `<delivery id@MAIL_DOMAIN>`."""
SMS_SID = "AC5c4a0500000000000000000000c4a05"
SMS_TOKEN = "chaos-sms-auth-token-not-a-secret"
SMS_FROM = "+15550009999"


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request that reached a receiver."""

    channel: str  # webhook | sms | email
    address: str  # the handle (webhook path), phone number or email address it was sent to
    delivery_id: str  # webhook-id, Idempotency-Key, or the local part of Message-ID
    content: str  # what a person would read: the body (decoded), subject included
    accepted: bool  # answered 2xx / 250 (False: refused during an outage, or a bad signature)
    at: float  # time.monotonic()


class _Outage:
    def __init__(self) -> None:
        self.until = 0.0
        self.windows: list[tuple[float, float]] = []

    def fail_for(self, seconds: float) -> None:
        now = time.monotonic()
        self.until = max(self.until, now + seconds)
        self.windows.append((now, now + seconds))

    @property
    def failing(self) -> bool:
        return time.monotonic() < self.until


@dataclass
class _Record:
    arrivals: list[Arrival] = field(default_factory=list)

    def accepted(self) -> list[Arrival]:
        return [a for a in self.arrivals if a.accepted]


class _HttpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.outage = _Outage()
        self.record = _Record()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self.routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


class WebhookReceivers(_HttpServer):
    """Every person's webhook endpoint, verifying Standard Webhooks signatures."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, str] = {}
        self.bad_signatures: list[str] = []  # "handle: error"

    def endpoint(self, handle: str) -> str:
        return f"{self.url}/hooks/{handle}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/hooks/{handle}", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        handle = request.match_info["handle"]
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        delivery_id = headers.get("webhook-id", "")
        text = body.decode(errors="replace")
        if self.outage.failing:
            self._note(handle, delivery_id, text, accepted=False)
            return web.Response(status=503, text="down for a while")
        secret = self.secrets.get(handle)
        try:
            if secret is None:
                raise WebhookVerificationError(f"no secret for {handle}")
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError as exc:
            self.bad_signatures.append(f"{handle} {delivery_id}: {exc}")
            self._note(handle, delivery_id, text, accepted=False)
            return web.Response(status=401, text="bad signature")
        self._note(handle, delivery_id, text, accepted=True)
        return web.Response(status=200, text="ok")

    def _note(self, handle: str, delivery_id: str, text: str, *, accepted: bool) -> None:
        self.record.arrivals.append(
            Arrival("webhook", handle, delivery_id, text, accepted, time.monotonic())
        )


class SmsProvider(_HttpServer):
    """A Twilio-compatible Messages API."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(f"{SMS_SID}:{SMS_TOKEN}".encode()).decode()
        if request.match_info["sid"] != SMS_SID or request.headers.get("Authorization") != expected:
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        form = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
        key = request.headers.get("Idempotency-Key", "")
        to, body = form.get("To", ""), form.get("Body", "")
        accepted = not self.outage.failing
        self.record.arrivals.append(Arrival("sms", to, key, body, accepted, time.monotonic()))
        if not accepted:
            return web.json_response({"code": 20503, "message": "unavailable"}, status=503)
        number = len(self.record.arrivals)
        return web.json_response({"sid": f"SM{number:032x}", "status": "queued"}, status=201)


def readable(message: EmailMessage) -> str:
    """Subject and every text part, decoded (quoted-printable or base64 undone)."""
    parts = [str(message.get("Subject", ""))]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            try:
                parts.append(str(part.get_content()))
            except (LookupError, ValueError):
                payload = part.get_payload(decode=True)
                parts.append(payload.decode(errors="replace") if isinstance(payload, bytes) else "")
    return "\n".join(parts)


class _MailHandler:
    def __init__(self, outage: _Outage, record: _Record) -> None:
        self.outage = outage
        self.record = record

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.outage.failing:
            self.record.arrivals.append(
                Arrival("email", address, "", "", accepted=False, at=time.monotonic())
            )
            return "451 4.3.0 down for a while, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        message_id = str(message.get("Message-ID", "")).strip().strip("<>")
        local, _, domain = message_id.partition("@")
        if domain == MAIL_DOMAIN:
            message_id = local  # else the whole of it: not a delivery id, the checks say so
        content = readable(message)
        for address in envelope.rcpt_tos:
            self.record.arrivals.append(
                Arrival("email", address, message_id, content, accepted=True, at=time.monotonic())
            )
        return "250 OK queued"


class MailServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.outage = _Outage()
        self.record = _Record()
        self._handler = _MailHandler(self.outage, self.record)
        self._server: asyncio.Server | None = None
        self._sessions: list[SMTP] = []

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    async def start(self) -> None:
        def session() -> SMTP:
            protocol = SMTP(self._handler, hostname="mail.chaos.test", ident="chaos-mail")
            self._sessions.append(protocol)
            return protocol

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(session, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            for protocol in self._sessions:
                if protocol.transport is not None:
                    protocol.transport.close()
            self._sessions.clear()
            await asyncio.wait_for(server.wait_closed(), timeout=5)


@dataclass
class Receivers:
    """The three of them, started and stopped together."""

    webhooks: WebhookReceivers = field(default_factory=WebhookReceivers)
    sms: SmsProvider = field(default_factory=SmsProvider)
    mail: MailServer = field(default_factory=MailServer)

    async def start(self) -> None:
        await self.webhooks.start()
        await self.sms.start()
        await self.mail.start()

    async def stop(self) -> None:
        await self.webhooks.stop()
        await self.sms.stop()
        await self.mail.stop()

    def outage(self, channel: str) -> _Outage:
        return {"webhook": self.webhooks.outage, "sms": self.sms.outage, "email": self.mail.outage}[
            channel
        ]

    @property
    def any_failing(self) -> bool:
        return any(self.outage(c).failing for c in ("webhook", "sms", "email"))

    def arrivals(self) -> list[Arrival]:
        return [
            *self.webhooks.record.arrivals,
            *self.sms.record.arrivals,
            *self.mail.record.arrivals,
        ]
