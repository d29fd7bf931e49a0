"""Inbound SMS, as a Twilio-format webhook: verified, then handed to the first handler that
takes it.

The provider POSTs each text Muster's number receives to /v1/inbound/sms as a form (`From`,
`To`, `Body`, `MessageSid`, ...), signed in `X-Twilio-Signature`: base64 HMAC-SHA1, under the
account's auth token (MUSTER_TWILIO_AUTH_TOKEN), of the full URL it called (under
MUSTER_PUBLIC_URL) followed by every POST parameter, sorted by name, name then value. The
check is the `twilio` library's RequestValidator. Anything unsigned or signed wrongly is
refused (403) before a handler sees it.

Handlers (`HANDLERS`) are tried in order; the first that answers wins, and a text nobody
takes gets an empty TwiML answer (no reply). Stop words end the phone's SMS subscriptions,
start words resume them (subscribing.stop_sms / start_sms). Roll-call replies will be one
more handler here. `YES` is not a start word, though Twilio counts it as one: it is kept
for replies that mean something else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from muster.api import subscribing
from muster.api.state import ApiState
from muster.errors import Forbidden

STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
"""Twilio's opt-out keywords (its Advanced Opt-Out defaults)."""
START_WORDS = frozenset({"START", "UNSTOP"})


@dataclass(frozen=True, slots=True)
class Inbound:
    """One text received: who sent it, to which of our numbers, what it says."""

    sender: str
    to: str
    body: str

    @property
    def keyword(self) -> str:
        """The first word, upper case, without punctuation around it."""
        words = self.body.strip().split()
        return words[0].strip(".!?,;:").upper() if words else ""


Handler = Callable[[ApiState, Inbound], Awaitable[str | None]]
"""A handler answers the reply text ("" for no reply) when it takes the text, else None."""


def verify(st: ApiState, url: str, params: dict[str, str], signature: str | None) -> None:
    """Refuse (403 `bad_signature`) what the provider did not sign with our auth token."""
    token = st.settings.twilio_auth_token
    if not token:
        raise Forbidden(
            "inbound SMS needs MUSTER_TWILIO_AUTH_TOKEN to check signatures",
            code="bad_signature",
        )
    if not signature or not RequestValidator(token).validate(url, params, signature):
        raise Forbidden("X-Twilio-Signature is missing or wrong", code="bad_signature")


async def stop_or_start(st: ApiState, text: Inbound) -> str | None:
    if text.keyword in STOP_WORDS:
        await subscribing.stop_sms(st, text.sender)
        return "You will get no more status updates by SMS. Reply START to get them again."
    if text.keyword in START_WORDS:
        resumed = await subscribing.start_sms(st, text.sender)
        if resumed:
            return "Status updates by SMS are on again. Reply STOP to stop."
        return "There is nothing to resume for this number."
    return None


HANDLERS: tuple[Handler, ...] = (stop_or_start,)


async def handle(st: ApiState, text: Inbound) -> str:
    """The TwiML answer to one verified text."""
    reply = MessagingResponse()
    for handler in HANDLERS:
        answer = await handler(st, text)
        if answer is not None:
            if answer:
                reply.message(answer)
            break
    return str(reply)
