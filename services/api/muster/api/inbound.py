"""Inbound SMS, as a Twilio-format webhook: verified, then dispatched by what it says.

The provider POSTs each text Muster's number receives to /v1/inbound/sms as a form (`From`,
`To`, `Body`, `MessageSid`, ...), signed in `X-Twilio-Signature`: base64 HMAC-SHA1, under the
account's auth token (MUSTER_TWILIO_AUTH_TOKEN), of the full URL it called (under
MUSTER_PUBLIC_URL) followed by every POST parameter, sorted by name, name then value. The
check is the `twilio` library's RequestValidator. Anything unsigned or signed wrongly is
refused (403) before a handler sees it.

`dispatch` decides what a verified text is, in one place: a MessageSid seen before is
ignored (Twilio signs no timestamp, so a captured request could be sent again); stop words
end the phone's SMS subscriptions and record, for the people who were sent roll-calls on
that phone, that SMS no longer reaches them (ContactPointOptedOut: a mandatory follower
cannot opt out of being asked, but the carrier will not deliver, so the report must show
it; their other channels carry on); start words undo both; a reply of digits only is a
roll-call answer code (muster.api.answering); anything else from a phone Muster sent a post
to is that person's reply in the post's thread (muster.api.smsreplies), and from any other
phone gets a short help text.
`YES` is not a start word, though Twilio counts it as one: it is kept for replies that mean
something else, and answers are never words.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from muster import eventlog, events, keys
from muster.api import answering, lookups, smsreplies, subscribing
from muster.api.state import ApiState
from muster.connection import texts
from muster.errors import Forbidden, NotFound
from muster.events import ContactPointOptedIn, ContactPointOptedOut, utcnow
from muster.records import Account

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
    message_sid: str = ""

    @property
    def keyword(self) -> str:
        """The first word, upper case, without punctuation around it."""
        words = self.body.strip().split()
        return words[0].strip(".!?,;:").upper() if words else ""


def verify(st: ApiState, url: str, params: dict[str, str], signature: str | None) -> None:
    """Refuse (403 `bad_signature`) what the provider did not sign with our auth token, or
    what names another provider account than ours."""
    token = st.settings.twilio_auth_token
    if not token:
        raise Forbidden(
            "inbound SMS needs MUSTER_TWILIO_AUTH_TOKEN to check signatures",
            code="bad_signature",
        )
    if not signature or not RequestValidator(token).validate(url, params, signature):
        raise Forbidden("X-Twilio-Signature is missing or wrong", code="bad_signature")
    ours, theirs = st.settings.twilio_account_sid, params.get("AccountSid")
    if ours and theirs and theirs != ours:
        raise Forbidden("the text is for another account (AccountSid)", code="bad_signature")


HELP_TEXT = (
    "Muster: to answer a roll-call, reply with the number of your answer from its message "
    "(e.g. 1). Reply STOP to stop SMS."
)
STOPPED_TEXT = "You will get no more SMS from Muster. Reply START to get them again."


async def dispatch(st: ApiState, text: Inbound) -> str:
    """What one verified text means, and the reply to it ("" for none)."""
    if text.message_sid and not await _first_time(st, text.message_sid):
        return ""  # a replay: handled once already
    if text.keyword in STOP_WORDS:
        await subscribing.stop_sms(st, text.sender)
        await opt_out(st, text)
        return STOPPED_TEXT
    if text.keyword in START_WORDS:
        resumed = await subscribing.start_sms(st, text.sender)
        resumed += await opt_in(st, text)
        if resumed:
            return "SMS from Muster are on again. Reply STOP to stop."
        return "There is nothing to resume for this number."
    code = answering.code_of(text.body)
    if code is not None:
        return await answering.answer_by_sms(st, text.sender, code, text.message_sid)
    replied = await smsreplies.reply(st, text.sender, text.body, text.message_sid)
    if replied is not None:
        return smsreplies.answer_text(replied)
    return HELP_TEXT


async def handle(st: ApiState, text: Inbound) -> str:
    """The TwiML answer to one verified text."""
    reply = MessagingResponse()
    answer = await dispatch(st, text)
    if answer:
        reply.message(answer)
    return str(reply)


async def _first_time(st: ApiState, message_sid: str) -> bool:
    ref = hashlib.sha256(message_sid.encode()).hexdigest()[:32]
    claimed = await st.redis.set(
        keys.inbound_seen("sms", ref), "1", nx=True, ex=keys.INBOUND_SEEN_TTL_S
    )
    return bool(claimed)


# --- opting out of SMS --------------------------------------------------------------------------
async def _phone_people(st: ApiState, phone: str) -> list[Account]:
    """The people sent roll-calls on `phone` whose number it still is."""
    found = []
    for handle in sorted({r for _, r in await st.links.phone_holders(phone)}):
        try:
            account = await lookups.existing(st, handle)
        except NotFound:
            continue
        if account.phone == phone:
            found.append(account)
    return found


async def opt_out(st: ApiState, text: Inbound) -> None:
    for account in await _phone_people(st, text.sender):
        q = keys.partition_of(account.handle, st.settings.partitions)
        if await st.redis.hexists(keys.sms_opted_out(q), account.handle):
            continue
        await _append(
            st,
            ContactPointOptedOut(
                id=st.ids.next(),
                actor=account.handle,
                at=utcnow(),
                account=account.handle,
                keyword=text.keyword,
                source_ref=text.message_sid,
            ),
        )


async def opt_in(st: ApiState, text: Inbound) -> int:
    """START: everyone whose SMS a stop word on this phone ended (whose number it still is)."""
    async with st.redis.pipeline(transaction=False) as pipe:
        for p in range(st.settings.partitions):
            pipe.hkeys(keys.sms_opted_out(p))
        replies: list[Any] = await pipe.execute()
    changed = 0
    for handle in sorted(texts(h for reply in replies for h in reply)):
        try:
            account = await lookups.existing(st, handle)
        except NotFound:
            continue
        if account.phone != text.sender:
            continue
        await _append(
            st,
            ContactPointOptedIn(
                id=st.ids.next(),
                actor=account.handle,
                at=utcnow(),
                account=account.handle,
                keyword=text.keyword,
                source_ref=text.message_sid,
            ),
        )
        changed += 1
    return changed


async def _append(st: ApiState, event: ContactPointOptedOut | ContactPointOptedIn) -> None:
    async with st.redis.pipeline(transaction=True) as pipe:
        await st.writeside.apply(pipe, event)
        eventlog.append(pipe, event, st.settings.partitions)
        await pipe.execute()
    st.metrics.ingested.labels(events.event_type(event)).inc()
