"""Roll-calls ("are you safe?"): opening one with its post, answers, the report, close and extend.

Where things live (docs/architecture.md, Roll-calls):
- the question — options, deadline, grace — is the post's (views.Post.rollcall, projected
  with the post by the timeline worker);
- the audience is recorded by the timeline worker as it fans the post out: each recipient
  joins the audience set of their own partition (keys.rollcall_audience) in the same script
  call that appends a RollCallAudienceRecorded naming them to that partition's log, so the
  snapshot is history and replay restores it rather than recomputing it;
- an answer is a RollCallAnswered appended to the recipient's partition, with its write-side
  state (the person's latest answer and their partition's counts, lua/rollcall_answer.lua) in
  the same MULTI — so every key an answer touches, its audience check included, is in one
  slot, and a crowd answering at once spreads over every partition;
- closing and extending are events of the account's partition (keys.rollcall_state).
Reads sum the partitions (one pipelined round trip).

Answers are taken until the deadline, then for GRACE_S more marked `late`; after that, or once
closed, 410. A close racing an answer may let that answer in just after it (they are checked
in different slots); the answer is then in the log after the close and counts as given.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec

from muster import eventlog, events, keys, views
from muster.api import validation
from muster.api.schemas import (
    RollCallAnswerOut,
    RollCallCounts,
    RollCallIn,
    RollCallOut,
    RollCallRecipientOut,
)
from muster.api.state import ApiState
from muster.connection import text, texts
from muster.errors import Conflict, Forbidden, Gone, Invalid, NotFound
from muster.events import EscalationPolicy, RollCall, RollCallOption, utcnow
from muster.records import Account, RollCallAnswer, rollcall_answer_of
from muster.views import Post
from muster.writeside import rollcall_answer_of_event

GRACE_S = 24 * 3600
"""Answers after the deadline are taken, marked late, for this long (Everbridge's
"confirmed late"): people answer late when they were busy being safe. Recorded in each
roll-call's post (grace_s) so changing it never changes a roll-call already open."""
MIN_AHEAD_S = 60
"""A deadline must be at least this far away when the roll-call opens or is extended."""
MAX_AHEAD = timedelta(days=7)
"""…and at most this far."""
MAX_PAGE = 1000
NOTE_MAX = 500
STATUSES = ("answered", "unanswered", "accounted_for", "help_open", "late", "suspect")
"""What GET …/recipients?status= filters by."""


# --- opening ---------------------------------------------------------------------------------
def question(req: RollCallIn, now: datetime, policy: EscalationPolicy | None = None) -> RollCall:
    """The roll-call a post opens, checked: distinct keys, a deadline ahead; with the
    escalation policy it names as it is now (muster.api.escalations.snapshot)."""
    seen: set[str] = set()
    for option in req.options:
        if option.key in seen:
            raise Invalid(
                f"option key {option.key!r} is used twice",
                code="duplicate_option",
                field="rollcall.options",
            )
        seen.add(option.key)
        if not option.label.strip():
            raise Invalid(
                "an option's label must not be empty", code="text_empty", field="rollcall.options"
            )
    _check_deadline(req.deadline, now, field="rollcall.deadline")
    return RollCall(
        options=tuple(RollCallOption(key=o.key, label=o.label, kind=o.kind) for o in req.options),
        deadline=req.deadline,
        grace_s=GRACE_S,
        policy=None if policy is None else policy.name,
        escalation=policy,
    )


def _check_deadline(deadline: datetime, now: datetime, *, field: str) -> None:
    if deadline < now + timedelta(seconds=MIN_AHEAD_S):
        raise Invalid(
            f"the deadline must be at least {MIN_AHEAD_S} s in the future",
            code="deadline_past",
            field=field,
        )
    if deadline > now + MAX_AHEAD:
        raise Invalid("the deadline must be within 7 days", code="deadline_too_far", field=field)


def note_of(value: str | None) -> str | None:
    """A note as given (None or blank: none); no control characters."""
    if value is None or not value.strip():
        return None
    return validation.text(value, limit=NOTE_MAX, field="note")


# --- one roll-call -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Loaded:
    """A roll-call as the api checks it: its post and its state now."""

    post: Post
    question: views.RollCallQuestion
    deadline: datetime
    closed: bool

    @property
    def id(self) -> str:
        return self.post.id

    @property
    def grace_until(self) -> datetime:
        return self.deadline + timedelta(seconds=self.question.grace_s)

    def state(self, now: datetime) -> str:
        return "closed" if self.closed or now > self.grace_until else "open"

    def option(self, key: str) -> RollCallOption:
        for option in self.question.options:
            if option.key == key:
                return option
        keys_ = ", ".join(o.key for o in self.question.options)
        raise Invalid(
            f"no option {key!r}; choose from {keys_}", code="unknown_option", field="option"
        )


async def load(st: ApiState, rollcall_id: str) -> Loaded:
    """The roll-call `rollcall_id` (404 when there is none, or its post is not projected yet)."""
    post = await st.reader.post(rollcall_id) if rollcall_id.isdigit() else None
    if post is None or post.rollcall is None:
        raise NotFound(f"no roll-call {rollcall_id}", code="no_such_rollcall")
    p = keys.partition_of(post.as_account, st.settings.partitions)
    raw: Any = await st.redis.hgetall(keys.rollcall_state(p, rollcall_id))
    changes = {text(k): text(v) for k, v in raw.items()}
    deadline = changes.get("deadline", post.rollcall.deadline)
    return Loaded(
        post=post,
        question=post.rollcall,
        deadline=_parse(deadline),
        closed=changes.get("state") == "closed",
    )


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


async def runs(st: ApiState, caller: Account, rc: Loaded) -> bool:
    """Whether `caller` runs the roll-call: its author, a poster of its account, an admin."""
    if caller.is_admin or caller.handle in (rc.post.author, rc.post.as_account):
        return True
    p = keys.partition_of(rc.post.as_account, st.settings.partitions)
    return bool(await st.redis.sismember(keys.posters(p, rc.post.as_account), caller.handle))


async def require_runner(st: ApiState, caller: Account, rc: Loaded) -> None:
    if not await runs(st, caller, rc):
        raise NotFound(f"no roll-call {rc.id}", code="no_such_rollcall")


async def require_proxy(st: ApiState, caller: Account, rc: Loaded, handle: str) -> None:
    """Who may answer for `handle`: those who run the roll-call, and `handle`'s manager (a
    manager who runs nothing sees the roll-call through their report only: 404 otherwise)."""
    if await runs(st, caller, rc):
        return
    if (await managers(st, [handle])).get(handle) != caller.handle:
        raise NotFound(f"no roll-call {rc.id}", code="no_such_rollcall")


async def in_audience(st: ApiState, rc: Loaded, handle: str) -> bool:
    q = keys.partition_of(handle, st.settings.partitions)
    return bool(await st.redis.sismember(keys.rollcall_audience(q, rc.id), handle))


async def current_answer(st: ApiState, rc: Loaded, handle: str) -> RollCallAnswer | None:
    q = keys.partition_of(handle, st.settings.partitions)
    raw: Any = await st.redis.hget(keys.rollcall_answers(q, rc.id), handle)
    return None if raw is None else rollcall_answer_of(raw)


def answer_out(rc_id: str, handle: str, answer: RollCallAnswer) -> RollCallAnswerOut:
    return RollCallAnswerOut(
        rollcall=rc_id,
        handle=handle,
        option=answer.option,
        kind=answer.kind,
        channel=answer.channel,
        note=answer.note,
        answered_at=views.rfc3339(answer.at),
        by=answer.actor,
        late=answer.late,
        suspect=answer.suspect,
        help_handled=answer.handled,
    )


# --- writes ---------------------------------------------------------------------------------------
async def _append(st: ApiState, event: events.AnyEvent) -> None:
    """The event and its write-side state, atomically, in its partition's slot."""
    async with st.redis.pipeline(transaction=True) as pipe:
        await st.writeside.apply(pipe, event)
        eventlog.append(pipe, event, st.settings.partitions)
        await pipe.execute()
    st.metrics.ingested.labels(events.event_type(event)).inc()


async def answer(
    st: ApiState,
    actor: Account,
    rc: Loaded,
    handle: str,
    option_key: str,
    note: str | None,
    *,
    channel: str,
    suspect: bool = False,
    source_ref: str = "",
    evidence: events.AnswerEvidence | None = None,
) -> RollCallAnswerOut:
    """`handle`'s answer (given by `actor`: themselves, or for a proxy answer the author or
    an admin). 422 unknown option, 403 not asked, 410 closed or past the grace. Answers
    from outside the app (muster.api.answering) say where they came from (`source_ref`,
    `evidence`) and whether they look automated (`suspect`)."""
    option = rc.option(option_key)
    now = utcnow()
    if rc.state(now) == "closed":
        raise Gone(f"roll-call {rc.id} is closed", code="rollcall_closed")
    if not await in_audience(st, rc, handle):
        if channel == "proxy":
            raise NotFound(
                f"{handle} was not asked in roll-call {rc.id}",
                code="not_in_audience",
                field="handle",
            )
        raise Forbidden(f"you were not asked in roll-call {rc.id}", code="not_in_audience")
    event = events.RollCallAnswered(
        id=st.ids.next(),
        actor=actor.handle,
        at=now,
        rollcall=rc.id,
        account=rc.post.as_account,
        recipient=handle,
        option=option.key,
        kind=option.kind,
        channel=channel,
        note=note or "",
        late=now > rc.deadline,
        suspect=suspect,
        source_ref=source_ref,
        evidence=evidence,
    )
    if option.kind == "help" and not suspect:
        # Announced before it is counted, so no live report counts it before its `help` event
        # (another change's report may be read the moment it is appended).
        await st.live.announce_help(event)
    await _append(st, event)
    return answer_out(rc.id, handle, rollcall_answer_of_event(event))


async def handle_help(
    st: ApiState, actor: Account, rc: Loaded, handle: str, note: str | None
) -> RollCallAnswerOut:
    """Mark `handle`'s `help` answer handled (409 when they have no open help)."""
    found = await current_answer(st, rc, handle)
    if found is None or found.kind != "help" or found.handled:
        raise Conflict(f"{handle} has no open help answer", code="no_open_help", field="handle")
    event = events.RollCallHelpHandled(
        id=st.ids.next(),
        actor=actor.handle,
        at=utcnow(),
        rollcall=rc.id,
        account=rc.post.as_account,
        recipient=handle,
        note=note or "",
    )
    await _append(st, event)
    after = await current_answer(st, rc, handle)
    assert after is not None
    return answer_out(rc.id, handle, after)


async def close(st: ApiState, actor: Account, rc: Loaded) -> None:
    if rc.state(utcnow()) == "closed":
        raise Conflict(f"roll-call {rc.id} is closed already", code="rollcall_closed")
    await _append(
        st,
        events.RollCallClosed(
            id=st.ids.next(),
            actor=actor.handle,
            at=utcnow(),
            rollcall=rc.id,
            account=rc.post.as_account,
        ),
    )


async def extend(st: ApiState, actor: Account, rc: Loaded, deadline: datetime) -> None:
    now = utcnow()
    if rc.state(now) == "closed":
        raise Conflict(f"roll-call {rc.id} is closed", code="rollcall_closed")
    _check_deadline(deadline, now, field="deadline")
    if deadline <= rc.deadline:
        raise Invalid(
            "the new deadline must be later than the current one",
            code="deadline_earlier",
            field="deadline",
        )
    await _append(
        st,
        events.RollCallExtended(
            id=st.ids.next(),
            actor=actor.handle,
            at=now,
            rollcall=rc.id,
            account=rc.post.as_account,
            deadline=deadline,
        ),
    )


# --- reads ------------------------------------------------------------------------------------
async def report(st: ApiState, rc: Loaded) -> RollCallOut:
    """The counts, summed over the partitions: one pipelined round trip."""
    parts = range(st.settings.partitions)
    async with st.redis.pipeline(transaction=False) as pipe:
        for q in parts:
            pipe.scard(keys.rollcall_audience(q, rc.id))
            pipe.hgetall(keys.rollcall_counts(q, rc.id))
            pipe.hkeys(keys.sms_opted_out(q))
            pipe.scard(keys.rollcall_unreachable(q, rc.id))
        replies: list[Any] = await pipe.execute()
    targeted = sum(int(n) for n in replies[0::4])
    opted_out = await _sms_opted_out(st, rc, replies[2::4])
    unreachable = sum(int(n) for n in replies[3::4])
    totals: dict[str, int] = {}
    for reply in replies[1::4]:
        for k, v in reply.items():
            totals[text(k)] = totals.get(text(k), 0) + int(v)
    by_option = {o.key: totals.get(f"opt:{o.key}", 0) for o in rc.question.options}
    by_channel = {name[3:]: n for name, n in sorted(totals.items()) if name.startswith("ch:") and n}
    answered = totals.get("answered", 0)
    suspect = totals.get("suspect", 0)
    counts = RollCallCounts(
        targeted=targeted,
        notified=targeted,  # every audience member got it in the app (see docs/api.md)
        unreachable=unreachable,  # as escalation found them: no channel reaches them
        answered=answered,
        accounted_for=answered - suspect,
        suspect=suspect,
        late=totals.get("late", 0),
        by_option=by_option,
        by_channel=by_channel,
        sms_opted_out=len(opted_out),
    )
    out = _summary(rc)
    out.counts = counts
    out.help_open = totals.get("help_open", 0)
    return out


def _summary(rc: Loaded) -> RollCallOut:
    return RollCallOut(
        id=rc.id,
        account=rc.post.as_account,
        author=rc.post.author,
        state=rc.state(utcnow()),  # type: ignore[arg-type]
        deadline=views.rfc3339(rc.deadline),
        grace_until=views.rfc3339(rc.grace_until),
        options=list(rc.question.options),
    )


async def own_view(st: ApiState, rc: Loaded, handle: str) -> RollCallOut:
    """What a person asked sees: the question and their own answer."""
    out = _summary(rc)
    out.asked = True
    found = await current_answer(st, rc, handle)
    if found is not None:
        out.answer = answer_out(rc.id, handle, found)
    return out


async def rows(st: ApiState, rc: Loaded) -> list[RollCallRecipientOut]:
    """Every person asked, by handle, with their latest answer."""
    parts = range(st.settings.partitions)
    async with st.redis.pipeline(transaction=False) as pipe:
        for q in parts:
            pipe.smembers(keys.rollcall_audience(q, rc.id))
            pipe.hgetall(keys.rollcall_answers(q, rc.id))
            pipe.hkeys(keys.sms_opted_out(q))
            pipe.hgetall(keys.rollcall_escalation(q, rc.id))
        replies: list[Any] = await pipe.execute()
    audience = sorted(h for reply in replies[0::4] for h in texts(reply))
    answers = {text(k): rollcall_answer_of(v) for reply in replies[1::4] for k, v in reply.items()}
    opted_out = await _sms_opted_out(st, rc, replies[2::4])
    levels = {
        text(k)[2:]: int(v)
        for reply in replies[3::4]
        for k, v in reply.items()
        if text(k).startswith("l:")
    }
    managers_of = await managers(st, audience)
    return [
        _row(h, answers.get(h), h in opted_out, levels.get(h, 0), managers_of.get(h))
        for h in audience
    ]


CHUNK = 1000
"""People per pipeline when reading something of each person asked."""


async def managers(st: ApiState, handles: Sequence[str]) -> dict[str, str]:
    """Each person's manager now (the account hash's `manager`), CHUNK per pipeline."""
    parts = st.settings.partitions
    out: dict[str, str] = {}
    for start in range(0, len(handles), CHUNK):
        chunk = handles[start : start + CHUNK]
        async with st.redis.pipeline(transaction=False) as pipe:
            for handle in chunk:
                pipe.hget(keys.account(keys.partition_of(handle, parts), handle), "manager")
            replies: list[Any] = await pipe.execute()
        out.update((h, text(m)) for h, m in zip(chunk, replies, strict=True) if m is not None)
    return out


async def _sms_opted_out(st: ApiState, rc: Loaded, stopped: list[Any]) -> set[str]:
    """The people asked whose phone texted a stop word, from each partition's
    keys.sms_opted_out (`stopped`, by partition: small, only those who did are in it),
    checked against the audience in one more round trip when there are any."""
    parts = range(st.settings.partitions)
    candidates = [(q, texts(reply)) for q, reply in zip(parts, stopped, strict=True) if reply]
    if not candidates:
        return set()
    async with st.redis.pipeline(transaction=False) as pipe:
        for q, handles in candidates:
            pipe.smismember(keys.rollcall_audience(q, rc.id), handles)
        asked: list[Any] = await pipe.execute()
    return {
        handle
        for (_, handles), flags in zip(candidates, asked, strict=True)
        for handle, flag in zip(handles, flags, strict=True)
        if flag
    }


def _row(
    handle: str,
    found: RollCallAnswer | None,
    sms_opted_out: bool,
    level: int = 0,
    manager: str | None = None,
) -> RollCallRecipientOut:
    if found is None:
        return RollCallRecipientOut(
            handle=handle,
            state="notified",
            option=None,
            kind=None,
            channel=None,
            answered_at=None,
            by=None,
            note=None,
            suspect=False,
            late=False,
            help_open=False,
            escalation_level=level,
            manager=manager,
            sms_opted_out=sms_opted_out,
        )
    return RollCallRecipientOut(
        handle=handle,
        state="answered",
        option=found.option,
        kind=found.kind,
        channel=found.channel,
        answered_at=views.rfc3339(found.at),
        by=found.actor,
        note=found.note,
        suspect=found.suspect,
        late=found.late,
        help_open=found.kind == "help" and not found.handled,
        escalation_level=level,
        manager=manager,
        sms_opted_out=sms_opted_out,
    )


def matches(
    row: RollCallRecipientOut, status: str | None, option: str | None, channel: str | None
) -> bool:
    if option is not None and row.option != option:
        return False
    if channel is not None and row.channel != channel:
        return False
    match status:
        case None:
            return True
        case "answered":
            return row.state == "answered"
        case "unanswered":
            return row.state != "answered"
        case "accounted_for":
            return row.state == "answered" and not row.suspect
        case "help_open":
            return row.help_open
        case "late":
            return row.late
        case _:
            return row.suspect


def check_filters(status: str | None, limit: int | None) -> int:
    if status is not None and status not in STATUSES:
        raise Invalid(
            f"status must be one of {', '.join(STATUSES)}", code="invalid_status", field="status"
        )
    if limit is None:
        return 100
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(
            f"limit must be between 1 and {MAX_PAGE}", code="invalid_limit", field="limit"
        )
    return limit


# --- export -------------------------------------------------------------------------------------
EXPORT_FIELDS = (
    "handle",
    "state",
    "option",
    "kind",
    "channel",
    "answered_at",
    "by",
    "late",
    "suspect",
    "help_open",
    "note",
    "sms_opted_out",
)
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A CSV cell that no spreadsheet runs as a formula (OWASP CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    cell = str(value)
    return "'" + cell if cell.startswith(_FORMULA) else cell


def export_csv(found: Sequence[RollCallRecipientOut]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EXPORT_FIELDS)
    for row in found:
        writer.writerow([_cell(getattr(row, name)) for name in EXPORT_FIELDS])
    yield buffer.getvalue()


def export_jsonl(found: Sequence[RollCallRecipientOut]) -> Iterator[bytes]:
    for row in found:
        yield msgspec.json.encode(row) + b"\n"
