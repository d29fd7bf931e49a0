"""Roll-call answers from outside the app: answer links, SMS reply codes, webhook callbacks.

Each is matched to one (roll-call, recipient) by what the delivery worker put into the message
(muster.answerlinks), then goes through the one answer path (rollcalls.answer) as a
RollCallAnswered with its channel, the provider's reference and evidence:

- **Link** (`/r/{link}`, email and SMS): GET and HEAD show a page and change nothing; only a
  POST carrying the page's token for this link answers. Channel: the one whose message
  carried the link. Answers that look automated (answerlinks.suspect_reason) are kept as
  suspect; the page then asks the person to confirm with one more press.
- **SMS code** (POST /v1/inbound/sms, muster.api.inbound): a reply that is only digits, one
  of the codes that phone was sent; the recipient's phone must still be that number.
  Channel `sms`; source_ref the MessageSid (a replayed one is ignored before it gets here).
- **Webhook callback** (POST /v1/rollcalls/callback/{link}): `{"option": key}`, signed as
  Muster signs its webhooks (Standard Webhooks) with the recipient's own secret, within
  ±5 minutes; each webhook-id once. Channel `webhook`.

A link, code or callback that is not one we sent is a uniform 404; a roll-call that is over
is 410, as in the app.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from muster import keys
from muster.answerlinks import now_ms, suspect_reason
from muster.api import bodies, lookups, rejections, rollcalls, subscribing
from muster.api.schemas import RollCallAnswerOut, RollCallCallback
from muster.api.state import ApiState
from muster.errors import Conflict, Forbidden, Gone, NotFound, TooManyRequests, Unauthorized
from muster.events import AnswerEvidence, utcnow
from muster.records import Account, RollCallLink

INVALID_LINK = "This answer link is not valid or has expired."
PAGE_CHANNELS = ("email", "sms")
"""The messages whose links open the answer page."""
USER_AGENT_CHARS = 200


@dataclass(frozen=True, slots=True)
class Asked:
    """A link's roll-call and the person it answers for."""

    link: RollCallLink
    rollcall: rollcalls.Loaded
    person: Account

    @property
    def open(self) -> bool:
        return self.rollcall.state(utcnow()) == "open"


async def asked_by_link(st: ApiState, link: str, *, channels: tuple[str, ...]) -> Asked:
    """What `link` answers (404 for anything we did not send, whose roll-call is gone, or
    that came by another of `channels`: a webhook's callback link never opens the page,
    which would answer without the webhook's signature)."""
    found = await st.links.resolve(link)
    if found is None or found.channel not in channels:
        raise NotFound(INVALID_LINK, code="invalid_link")
    try:
        rc = await rollcalls.load(st, found.rollcall)
        person = await lookups.existing(st, found.recipient)
    except NotFound:
        raise NotFound(INVALID_LINK, code="invalid_link") from None
    return Asked(found, rc, person)


def _ref(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


async def _first_time(st: ApiState, scope: str, ref: str) -> bool:
    """Claim a provider's message id (or a page token and option) once: False if seen."""
    claimed = await st.redis.set(
        keys.inbound_seen(scope, ref), "1", nx=True, ex=keys.INBOUND_SEEN_TTL_S
    )
    return bool(claimed)


# --- links ------------------------------------------------------------------------------------
LINK_ANSWERS_PER_HOUR = 20
"""Answers one link may give in an hour: each is an event in the log for good, and a page can
be fetched for a fresh token at will, so a script must not be able to flood the log."""


async def _limit_link(st: ApiState, link: str) -> None:
    """429 past LINK_ANSWERS_PER_HOUR for this link (counted by its hash, never the link)."""
    now = time.time()
    window = int(now // 3600)
    key = keys.rate("answerlink", _ref("link", link), window)
    async with st.redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, 3600)
        count, _ = await pipe.execute()
    if int(count) > LINK_ANSWERS_PER_HOUR:
        raise TooManyRequests(
            "Too many answers through this link; try again later.",
            retry_after=max(1, int(3600 - now % 3600)),
        )


async def answer_by_link(
    st: ApiState,
    asked: Asked,
    link: str,
    option: str,
    page_token: str,
    *,
    client: str | None,
    user_agent: str,
) -> RollCallAnswerOut:
    """The answer a press on the page's button gives. 403 without a page token of this link
    (a scanner submitting a form it made up); 410 once the roll-call is over (recorded, as
    a RollCallAnswerRejected, when the form came from the page: a person pressed too late)."""
    age = await st.links.page_token_age_s(link, page_token)
    if not asked.open:
        if age is not None:
            subject = rejections.subject_hash("link", link)
            await rejections.record(
                st,
                channel=asked.link.channel,
                reason="rollcall_closed",
                subject=subject,
                rollcall=asked.rollcall.id,
                recipient=asked.person.handle,
                source_ref=subject,
            )
        raise Gone(f"roll-call {asked.rollcall.id} is closed", code="rollcall_closed")
    if age is None:
        raise Forbidden(
            "This form did not come from the answer page, or is too old: open the link again.",
            code="bad_page_token",
        )
    asked.rollcall.option(option)  # 422 before anything is claimed
    await _limit_link(st, link)
    since_delivery = (now_ms() - asked.link.sent_ms) / 1000
    agent = user_agent[:USER_AGENT_CHARS]
    reason = suspect_reason(agent, since_delivery, age)
    ref = _ref("page", page_token, option)
    if not await _first_time(st, "page", ref):  # the same press again (a double submit)
        found = await rollcalls.current_answer(st, asked.rollcall, asked.person.handle)
        if found is not None:
            return rollcalls.answer_out(asked.rollcall.id, asked.person.handle, found)
    evidence = AnswerEvidence(
        network=await subscribing.network_of(st, client),
        user_agent=agent,
        since_delivery_s=round(since_delivery, 3),
        since_page_s=round(age, 3),
        suspect_because=reason,
    )
    return await rollcalls.answer(
        st,
        asked.person,
        asked.rollcall,
        asked.person.handle,
        option,
        None,
        channel=asked.link.channel,
        suspect=bool(reason),
        source_ref=ref,
        evidence=evidence,
    )


# --- SMS codes -------------------------------------------------------------------------------------
MAX_CODE = 9999


def code_of(body: str) -> int | None:
    """A reply code: the text is digits only (spaces around allowed), nothing else — never a
    word, so STOP, YES or HELP can never be taken for an answer."""
    text = body.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 4:
        return None
    code = int(text)
    return code if 0 < code <= MAX_CODE else None


async def answer_by_sms(st: ApiState, phone: str, code: int, message_sid: str) -> str:
    """The reply to a code texted from `phone`: what was recorded, or why nothing was (each
    refusal a RollCallAnswerRejected, bounded per phone: muster.api.rejections)."""
    subject = rejections.subject_hash("phone", phone)

    async def refuse(
        reply: str, reason: str, rollcall: str | None = None, recipient: str | None = None
    ) -> str:
        await rejections.record(
            st,
            channel="sms",
            reason=reason,
            subject=subject,
            rollcall=rollcall,
            recipient=recipient,
            source_ref=message_sid,
        )
        return reply

    unknown = "That code does not answer any open roll-call sent to this phone."
    held = await st.links.code_holder(phone, code)
    if held is None:
        return await refuse(unknown, "unknown_code")
    rollcall_id, recipient, index = held
    try:
        rc = await rollcalls.load(st, rollcall_id)
        person = await lookups.existing(st, recipient)
    except NotFound:
        return await refuse("That roll-call no longer exists.", "no_such_rollcall", rollcall_id)
    if person.phone != phone:  # the number moved to someone else since the SMS was sent
        return await refuse(
            "That code was sent to someone whose phone number has changed since.",
            "number_changed",
            rollcall_id,
        )
    if index >= len(rc.question.options):
        return await refuse(unknown, "unknown_code", rollcall_id, recipient)
    option = rc.question.options[index]
    try:
        await rollcalls.answer(
            st,
            person,
            rc,
            recipient,
            option.key,
            None,
            channel="sms",
            source_ref=message_sid,
        )
    except Gone:
        return await refuse(
            "That roll-call is closed: your answer was not recorded.",
            "rollcall_closed",
            rollcall_id,
            recipient,
        )
    except Forbidden:
        return await refuse(
            "You were not asked in that roll-call.", "not_in_audience", rollcall_id, recipient
        )
    return f"Recorded: {option.label}. Reply with another code to change it."


# --- webhook callbacks ----------------------------------------------------------------------------
async def answer_by_callback(
    st: ApiState, link: str, body: bytes, headers: dict[str, str]
) -> RollCallAnswerOut:
    """A webhook recipient's answer. 404 for a callback URL we did not send (or not a
    webhook's), 401 for a bad or stale signature, 409 for a webhook-id already taken."""
    asked = await asked_by_link(st, link, channels=("webhook",))
    secret = asked.person.webhook_secret
    if not secret:
        raise Unauthorized("the recipient has no webhook secret to check", code="bad_signature")
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except WebhookVerificationError:
        raise Unauthorized(
            "webhook-signature is missing or wrong, or webhook-timestamp is not within 5 minutes",
            code="bad_signature",
        ) from None
    req = bodies.decode(body, RollCallCallback)
    if not asked.open:
        await rejections.record(
            st,
            channel="webhook",
            reason="rollcall_closed",
            subject=rejections.subject_hash("link", link),
            rollcall=asked.rollcall.id,
            recipient=asked.person.handle,
            source_ref=headers.get("webhook-id", ""),
        )
        raise Gone(f"roll-call {asked.rollcall.id} is closed", code="rollcall_closed")
    asked.rollcall.option(req.option)  # 422 before the id is claimed
    webhook_id = headers.get("webhook-id", "")
    if not await _first_time(st, "webhook", _ref(asked.person.handle, webhook_id)):
        raise Conflict(f"webhook-id {webhook_id} was taken already", code="replayed")
    return await rollcalls.answer(
        st,
        asked.person,
        asked.rollcall,
        asked.person.handle,
        req.option,
        None,
        channel="webhook",
        source_ref=webhook_id,
    )
