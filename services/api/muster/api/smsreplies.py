"""A text back that is no keyword and no code: the person's reply in the thread of the post
their phone was last sent by SMS (muster.smsthreads, recorded by the delivery worker).

Only after the inbound webhook's signature was checked and its MessageSid taken once
(muster.api.inbound). The phone must still be the number of the account the post was sent
to (a number that changed hands replies for nobody), and the reply is checked and written as
POST /v1/posts does and as mail-in does (muster.api.inboundmail): the person must still see
the post, the text within MUSTER_MAX_POST_CHARS, internal unless they are external, under the
same backpressure. Its Idempotency-Key is made from the MessageSid, so the one text is one
reply however often it is handled. A phone Muster sent no post to (or none for
keys.SMS_THREAD_TTL_S) gets None here, and the caller's help text.

It never logs the text.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import structlog

from muster import smsthreads
from muster.api import accounts, publishing, validation
from muster.api.schemas import CreatePost
from muster.api.state import ApiState
from muster.errors import ApiError

log = structlog.get_logger("muster.api.smsreplies")

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

POSTED_TEXT = "Muster: posted as your reply to the last message we sent you."


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a text back did: `reply` (the post written) or `refused` (the app's error code)."""

    kind: str
    post: str | None = None
    reason: str | None = None


async def reply(st: ApiState, phone: str, body: str, message_sid: str) -> Outcome | None:
    """The reply a text from `phone` makes; None when it replies to nothing we know."""
    thread = await smsthreads.last_sent(st.redis, phone, st.settings.partitions)
    if thread is None:
        return None
    account = await accounts.load(st.redis, thread.recipient, st.settings.partitions)
    if account is None or not account.active or account.kind != "person" or account.phone != phone:
        return None
    text = _CONTROL.sub("", body).strip()
    digest = hashlib.sha256(f"{phone}\0{message_sid}".encode()).hexdigest()
    try:
        publishing.check_sender(account)
        validation.text(text, limit=st.settings.max_post_chars)
        await publishing.check_reply(st, account, thread.post)
        await publishing.publish_post(
            st,
            account,
            CreatePost(text=text, in_reply_to=thread.post),
            as_account=account.handle,
            visibility=publishing.visibility_for(account, None),
            idempotency_key=f"sms-{digest[:48]}" if message_sid else None,
        )
    except ApiError as exc:
        log.info("sms reply refused", recipient=account.handle, reason=exc.code)
        return Outcome("refused", post=thread.post, reason=exc.code)
    log.info("sms reply", recipient=account.handle, target=thread.post)
    return Outcome("reply", post=thread.post)


def answer_text(outcome: Outcome) -> str:
    """The text back to the sender."""
    if outcome.kind == "reply":
        return POSTED_TEXT
    if outcome.reason == "text_too_long":
        return "Muster: your reply is too long to post; please shorten it."
    return "Muster: your reply could not be posted to that thread."
