"""Inbound email: a reply to a reply address (muster.replies) becomes that person's reply.

Both doors call `receive`: `muster mail-in` (SMTP, muster.api.mailin) and a provider's
inbound webhook (routes/inbound.py). What it does with one message to one reply address:

1. the address must be ours and current (forged or expired: `not_ours`, nothing happens);
2. the message is claimed under (person, Message-ID) (keys.inbound_mail), so a message
   delivered twice or replayed is handled once;
3. it is refused — an InboundEmailRefused event with the reason, no text kept — when the
   person has no active account, when it looks automated (an out-of-office reply, a
   bounce, a list), when From (and the envelope sender, where known) is not the person's
   address, when nothing is left once quoted text and signatures are stripped, or when the
   app would refuse the same reply (`reason`: its error code);
4. otherwise, to a roll-call's question, a first line naming an option is the person's
   answer (channel `email`); to any other post, the text is their reply in its thread;
   to a DM, their DM back in that conversation. The writes are the app's: the same checks
   and the same functions as POST /v1/posts, /v1/dms and /v1/rollcalls/{id}/responses.

It never logs a message's text.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from email.message import EmailMessage

import msgspec
import structlog

from muster import eventlog, events, keys
from muster.api import accounts, publishing, rejections, replytext, rollcalls, validation
from muster.api.schemas import CreateDm, CreatePost
from muster.api.state import ApiState
from muster.errors import ApiError, NotFound
from muster.events import utcnow
from muster.records import Account
from muster.replies import ReplyAddresses, ReplyTo
from muster.views import Post

log = structlog.get_logger("muster.api.inboundmail")

ACTOR = "mail-in"
"""The actor of an InboundEmailRefused: no person made it."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """How a message arrived: the reply address it was for, the envelope sender (MAIL FROM:
    "" for the null sender `<>`, None when the door does not say) and the door."""

    recipient: str
    sender: str | None
    via: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one message did: `reply`, `dm`, `answer` (with the id written), `refused` (with
    the reason), `duplicate` (handled before) or `not_ours` (no valid reply address)."""

    kind: str
    reason: str | None = None
    id: str | None = None


class Busy(Exception):
    """Another process is handling this very message now: the sender should try later."""


def reply_addresses(st: ApiState) -> ReplyAddresses | None:
    secret = st.settings.mail_in_secret
    if secret is None:
        return None
    return ReplyAddresses(secret, st.settings.reply_domain, st.settings.mail_in_reply_days)


async def receive(st: ApiState, replies: ReplyAddresses, raw: bytes, envelope: Envelope) -> Outcome:
    """Handle one message sent to one reply address (module docstring)."""
    reply_to = replies.check(envelope.recipient)
    if reply_to is None:
        return Outcome("not_ours")
    mail = replytext.parse(raw)
    message_id = _message_id(mail, raw)
    p = keys.partition_of(reply_to.handle, st.settings.partitions)
    digest = hashlib.sha256(f"{reply_to.handle}\0{message_id}".encode()).hexdigest()
    claim = keys.inbound_mail(p, digest)
    if not await st.redis.set(claim, "pending", nx=True, ex=keys.INBOUND_MAIL_PENDING_TTL_S):
        if await st.redis.get(claim) == b"pending":
            raise Busy(message_id)
        return Outcome("duplicate")
    try:
        outcome = await _act(st, mail, envelope, reply_to, message_id, digest, claim)
    except BaseException:
        await st.redis.delete(claim)
        raise
    log.info(
        "inbound email",
        via=envelope.via,
        recipient=reply_to.handle,
        target=reply_to.message_id,
        outcome=outcome.kind,
        reason=outcome.reason,
    )
    return outcome


async def _act(
    st: ApiState,
    mail: EmailMessage,
    envelope: Envelope,
    reply_to: ReplyTo,
    message_id: str,
    digest: str,
    claim: str,
) -> Outcome:
    sender = replytext.from_address(mail)

    async def refuse(reason: str) -> Outcome:
        refused = events.InboundEmailRefused(
            id=st.ids.next(),
            actor=ACTOR,
            at=utcnow(),
            recipient=reply_to.handle,
            target=reply_to.message_id,
            sender=sender[:254],
            message_id=message_id[:998],
            reason=reason,
            via=envelope.via,
        )
        async with st.redis.pipeline(transaction=True) as pipe:
            eventlog.append(pipe, refused, st.settings.partitions)
            pipe.set(claim, "done", ex=keys.INBOUND_MAIL_TTL_S)
            await pipe.execute()
        st.metrics.ingested.labels("InboundEmailRefused").inc()
        return Outcome("refused", reason=reason)

    account = await accounts.load(st.redis, reply_to.handle, st.settings.partitions)
    if account is None or not account.active or account.kind != "person":
        return await refuse("no_account")
    if replytext.automated(mail, envelope.sender):
        return await refuse("auto_reply")
    if not _same_address(sender, account.email) or (
        envelope.sender is not None and not _same_address(envelope.sender, account.email)
    ):
        return await refuse("wrong_sender")
    text = replytext.reply_text(mail)
    if not text:
        return await refuse("empty")
    try:
        outcome = await _write(st, account, reply_to.message_id, text, digest, message_id)
    except ApiError as exc:
        return await refuse(exc.code)
    await st.redis.set(claim, "done", ex=keys.INBOUND_MAIL_TTL_S)
    return outcome


async def _write(
    st: ApiState, account: Account, target: str, text: str, digest: str, message_id: str
) -> Outcome:
    """The person's reply, through the app's own checks and writes."""
    # The Idempotency-Key of the app's write path: a retry after a crash between the append
    # and marking the message done appends nothing twice.
    idempotency_key = f"email-{digest[:48]}"
    post = await st.reader.post(target)
    if post is not None:
        if post.rollcall is not None:
            answered = await rollcall_answer(st, account, post, text, message_id)
            if answered is not None:
                return Outcome("answer", id=answered)
        publishing.check_sender(account)
        validation.text(text, limit=st.settings.max_post_chars)
        await publishing.check_reply(st, account, target)
        req = CreatePost(text=text, in_reply_to=target)
        visibility = publishing.visibility_for(account, None)
        payload = await publishing.publish_post(
            st,
            account,
            req,
            as_account=account.handle,
            visibility=visibility,
            idempotency_key=idempotency_key,
        )
        return Outcome("reply", id=_id_of(payload))
    found = await st.reader.messages([target])
    if not found or account.handle not in {found[0].from_, found[0].to}:
        raise NotFound(f"no post or message {target}", code="no_such_parent")
    dm = found[0]
    other = dm.from_ if dm.to == account.handle else dm.to
    validation.text(text, limit=st.settings.max_post_chars)
    await publishing.check_dm_recipient(st, account, other)
    await publishing.check_dm_reply(st, account, other, target)
    payload = await publishing.send_dm(
        st,
        account,
        CreateDm(to=other, text=text, in_reply_to=target),
        idempotency_key=idempotency_key,
    )
    return Outcome("dm", id=_id_of(payload))


async def rollcall_answer(
    st: ApiState, account: Account, post: Post, text: str, message_id: str
) -> str | None:
    """The roll-call hook: a reply whose first line is an option's key or label (any case,
    end punctuation ignored) is the person's answer, the rest of the text its note. None
    (the text is then a reply in the thread) when the first line names no option, or the
    roll-call no longer takes answers or did not ask them: that refusal is recorded, a
    RollCallAnswerRejected (muster.api.rejections), before the text goes to the thread."""
    assert post.rollcall is not None
    first, _, rest = text.strip().partition("\n")
    said = " ".join(first.split()).strip(".!?,;:").casefold()
    option = next(
        (o for o in post.rollcall.options if said in {o.key.casefold(), o.label.casefold()}),
        None,
    )
    if option is None:
        return None
    rc = await rollcalls.load(st, post.id)
    note = rest.strip()[: rollcalls.NOTE_MAX] or None
    try:
        out = await rollcalls.answer(
            st, account, rc, account.handle, option.key, rollcalls.note_of(note), channel="email"
        )
    except ApiError as exc:  # closed, past its grace, or not asked: a reply in the thread
        await rejections.record(
            st,
            channel="email",
            reason=exc.code,
            subject=rejections.subject_hash("person", account.handle),
            rollcall=rc.id,
            recipient=account.handle,
            source_ref=message_id,
        )
        return None
    return out.rollcall


class _Written(msgspec.Struct):
    """The one field of the written post's or DM's JSON that an outcome names."""

    id: str


def _id_of(payload: bytes) -> str:
    return msgspec.json.decode(payload, type=_Written).id


def _message_id(mail: EmailMessage, raw: bytes) -> str:
    """The message's Message-ID; one made from its bytes when it has none."""
    value = str(mail.get("Message-ID", "")).strip()
    return value or f"<{hashlib.sha256(raw).hexdigest()}@muster.invalid>"


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _same_address(given: str, known: str | None) -> bool:
    """Addresses compare as the email index compares them: ASCII letters lowered."""
    if not known:
        return False
    return given.strip().strip("<>").translate(_ASCII_LOWER) == known.translate(_ASCII_LOWER)
