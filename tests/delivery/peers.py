"""Real peers for the delivery tests, each on a free loopback port in the test's event loop.

- `HttpReceiver`: an aiohttp web server that records every request (headers, body) and
  answers as told: 500 for the first `fail_first` requests, a fixed status per path, or
  holding each request for `delay_s`. It can be stopped and started again on the same port
  (a receiver that is down for a while).
- `TwilioFake`: Twilio's Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`,
  form `To`, `From`, `Body`, basic auth), answering 201 like Twilio, 401 on a wrong login
  and 400 for numbers in `refused`.
- `SmtpSink`: aiosmtpd's SMTP protocol on a loopback server; records each message
  (envelope and parsed email) and refuses recipients in `refused` with 550.

All of them only listen on 127.0.0.1 and are closed by their fixtures.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import warnings
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from redis_server import free_port


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered


class _Http:
    """An aiohttp app on a fixed loopback port that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


class HttpReceiver(_Http):
    def __init__(self, *, fail_first: int = 0, delay_s: float = 0.0) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.status_for: dict[str, int] = {}
        self.requests: list[Request] = []
        self.arrived: list[Request] = []  # every request as it came in, before any answer

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.arrived.append(Request(request.path, headers, body, 0))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if len(self.requests) < self.fail_first:
            status = 500
        else:
            status = self.status_for.get(request.path, 200)
        self.requests.append(Request(request.path, headers, body, status))
        return web.Response(status=status, text="ok" if status < 300 else "nope")

    def accepted(self) -> list[Request]:
        return [r for r in self.requests if 200 <= r.status < 300]

    def ids(self) -> Counter[str]:
        """webhook-id → how many times it was accepted."""
        return Counter(r.headers["webhook-id"] for r in self.accepted())


@dataclass(frozen=True)
class Sms:
    to: str
    sender: str
    body: str
    idempotency_key: str | None


class TwilioFake(_Http):
    SID = "AC0123456789abcdef0123456789abcdef"
    TOKEN = "twilio-test-auth-token-not-a-secret"
    FROM = "+15550001111"

    def __init__(self, *, fail_first: int = 0) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.refused: set[str] = set()
        self.calls = 0
        self.messages: list[Sms] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        expected = "Basic " + base64.b64encode(f"{self.SID}:{self.TOKEN}".encode()).decode()
        if (
            request.match_info["sid"] != self.SID
            or request.headers.get("Authorization") != expected
        ):
            return web.json_response({"code": 20003, "message": "Authenticate"}, status=401)
        if request.content_type != "application/x-www-form-urlencoded":
            return web.json_response({"code": 12300, "message": "bad content type"}, status=400)
        form = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
        if self.calls <= self.fail_first:
            return web.json_response({"code": 20500, "message": "Internal error"}, status=500)
        if form.get("To") in self.refused:
            return web.json_response({"code": 21211, "message": "Invalid 'To'"}, status=400)
        self.messages.append(
            Sms(form["To"], form["From"], form["Body"], request.headers.get("Idempotency-Key"))
        )
        return web.json_response(
            {"sid": f"SM{len(self.messages):032x}", "status": "queued"}, status=201
        )

    def keys(self) -> Counter[str | None]:
        return Counter(m.idempotency_key for m in self.messages)


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    message: EmailMessage
    raw: bytes = b""
    """As it came over SMTP (`message` is parsed, RFC 2047 words decoded)."""


@dataclass
class _SinkHandler:
    refused: set[str]
    mails: list[Mail] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address in self.refused:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.mails.append(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), message, raw))
        return "250 OK queued"


class SmtpSink:
    """`login`: (user, password) the server requires (AUTH, over plain TCP: a test only)."""

    def __init__(self, *, login: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self.login = login
        self.logins: list[str] = []
        self.handler = _SinkHandler(refused=set())
        self._server: asyncio.Server | None = None
        self._sessions: list[SMTP] = []

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def mails(self) -> list[Mail]:
        return self.handler.mails

    @property
    def refused(self) -> set[str]:
        return self.handler.refused

    def ids(self) -> Counter[str]:
        """Message-ID → how many times it arrived."""
        return Counter(str(m.message["Message-ID"]) for m in self.mails)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def session() -> SMTP:
            if self.login is None:
                protocol = SMTP(self.handler, hostname="sink.test", ident="muster-test-sink")
            else:
                with warnings.catch_warnings():  # AUTH without TLS: aiosmtpd warns, rightly
                    warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
                    protocol = SMTP(
                        self.handler,
                        hostname="sink.test",
                        ident="muster-test-sink",
                        authenticator=self._authenticate,
                        auth_required=True,
                        auth_require_tls=False,
                    )
            self._sessions.append(protocol)
            return protocol

        self._server = await loop.create_server(session, "127.0.0.1", self.port, reuse_address=True)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.login is not None
        user, password = self.login
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            user.encode(),
            password.encode(),
        )
        if ok:
            self.logins.append(user)
        return AuthResult(success=ok)

    async def stop(self) -> None:
        """Close the listener and every open session (the worker keeps its sessions open)."""
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            for protocol in self._sessions:
                if protocol.transport is not None:
                    protocol.transport.close()
            self._sessions.clear()
            await asyncio.wait_for(server.wait_closed(), timeout=5)
