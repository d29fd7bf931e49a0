"""`muster mail-in`: the SMTP listener that takes replies to Muster's email, for sites that
receive their own mail (MX, or a relay, pointed at MUSTER_MAIL_IN_ADDRESS).

It is a second door of the api, not a service of its own: a reply is written by the api's
own code (muster.api.inboundmail, the checks and writes of POST /v1/posts, /v1/dms and the
roll-call answer), in this process, on an ApiState of its own. Calling the api over HTTP
instead would need a route that lets a service post as any person; moving the publishing
code into shared/ would move half the api. So the listener lives in the api package and
only the command line starts it.

The conversation: RCPT is refused (550) for anything but a current reply address, checked
from the secret alone (muster.replies), so forged and expired addresses never get as far as
DATA; at most MAX_RECIPIENTS per message; DATA over MUSTER_MAIL_IN_MAX_BYTES is refused
(552) by aiosmtpd. A message is then handled once per reply address it was for; 250 once
each is handled or refused on the record, 451 (the sender retries) when Redis is away or
another process is handling the same message. STARTTLS is offered with
MUSTER_MAIL_IN_TLS_CERT and _KEY, not required (as between mail servers).
"""

from __future__ import annotations

import asyncio
import signal
import ssl
from typing import Any

import structlog
from aiosmtpd.smtp import SMTP, Envelope, Session

from muster import connection
from muster.api import inboundmail, opening
from muster.api.state import ApiState
from muster.replies import ReplyAddresses
from muster.settings import Settings, split_address

log = structlog.get_logger("muster.api.mailin")

MAX_RECIPIENTS = 10
"""Reply addresses one message may be for: a reply goes to one; more is someone probing."""


class _Handler:
    def __init__(self, st: ApiState, replies: ReplyAddresses) -> None:
        self.st = st
        self.replies = replies

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.replies.check(address) is None:
            return "550 5.1.1 not a reply address of this Muster (or it has expired)"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        sender = envelope.mail_from
        for recipient in envelope.rcpt_tos:
            door = inboundmail.Envelope(
                recipient=recipient,
                sender=None if sender is None else sender.strip("<>"),
                via="smtp",
            )
            try:
                await inboundmail.receive(self.st, self.replies, raw, door)
            except inboundmail.Busy:
                return "451 4.3.0 this message is being handled; try again later"
            except connection.UNAVAILABLE:
                log.warning("inbound email deferred: Redis unavailable")
                return "451 4.3.0 temporarily unable to take mail; try again later"
        return "250 OK"


class MailIn:
    """The listener on one address, over `st` (the api's state for this process)."""

    def __init__(self, st: ApiState, replies: ReplyAddresses) -> None:
        self.st = st
        self.handler = _Handler(st, replies)
        self._server: asyncio.Server | None = None
        self._sessions: list[SMTP] = []
        self._tls = _tls_context(st.settings)

    def _session(self) -> SMTP:
        protocol = SMTP(
            self.handler,
            data_size_limit=self.st.settings.mail_in_max_bytes,
            hostname=self.st.settings.reply_domain,
            ident="Muster mail-in",
            timeout=60,
            tls_context=self._tls,
            # Opportunistic, as between mail servers: a sender without TLS is still taken.
            require_starttls=False,
        )
        self._sessions = [s for s in self._sessions if s.transport is not None]
        self._sessions.append(protocol)
        return protocol

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._session, host, port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for protocol in self._sessions:
            if protocol.transport is not None:
                protocol.transport.close()
        self._sessions.clear()
        await asyncio.wait_for(server.wait_closed(), timeout=10)


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """STARTTLS with MUSTER_MAIL_IN_TLS_CERT and _KEY (replies may hold DMs and "need
    help" answers: senders that can encrypt should)."""
    if settings.mail_in_tls_cert is None or settings.mail_in_tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.mail_in_tls_cert, settings.mail_in_tls_key)
    return context


async def serve(settings: Settings) -> None:
    """`muster mail-in`: listen on MUSTER_MAIL_IN_ADDRESS until SIGTERM or SIGINT."""
    if settings.mail_in_address is None or settings.mail_in_secret is None:
        raise ValueError("mail-in needs MUSTER_MAIL_IN_ADDRESS and MUSTER_MAIL_IN_SECRET")
    host, port = split_address(settings.mail_in_address)
    st = await opening.open_state(settings)
    replies = ReplyAddresses(
        settings.mail_in_secret, settings.reply_domain, settings.mail_in_reply_days
    )
    listener = MailIn(st, replies)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await listener.start(host, port)
    log.info("mail-in listening", address=settings.mail_in_address, domain=replies.domain)
    try:
        await stopping.wait()
    finally:
        await listener.stop()
        await st.redis.aclose()
        log.info("mail-in stopped")
