"""The public shapes of posts and direct messages, as stored by the timeline worker and
served by the api unchanged (one encoding, made once, when the event is handled).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from muster.events import DirectMessageSent, PostPublished, RollCall, RollCallOption


class RollCallQuestion(msgspec.Struct, kw_only=True):
    """The roll-call a post opens, as the post shows it (its state and counts: GET
    /v1/rollcalls/{id})."""

    options: list[RollCallOption]
    deadline: str
    grace_s: int
    policy: str | None = None


class Post(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    author: str
    as_account: str
    text: str
    visibility: Literal["public", "internal"]
    severity: Literal["info", "warning", "critical"]
    in_reply_to: str | None
    created_at: str
    rollcall: RollCallQuestion | None = None


class Message(msgspec.Struct, kw_only=True):
    id: str
    from_: str = msgspec.field(name="from")
    to: str
    text: str
    in_reply_to: str | None
    created_at: str


def rfc3339(moment: datetime) -> str:
    """UTC, milliseconds, `Z`: the one time format of the API."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def post_of(event: PostPublished) -> Post:
    return Post(
        id=event.id,
        author=event.author,
        as_account=event.as_account,
        text=event.text,
        visibility=event.visibility,  # type: ignore[arg-type]
        severity=event.severity,  # type: ignore[arg-type]
        in_reply_to=event.in_reply_to,
        created_at=rfc3339(event.at),
        rollcall=None if event.rollcall is None else question_of(event.rollcall),
    )


def question_of(rollcall: RollCall) -> RollCallQuestion:
    return RollCallQuestion(
        options=list(rollcall.options),
        deadline=rfc3339(rollcall.deadline),
        grace_s=rollcall.grace_s,
        policy=rollcall.policy,
    )


def message_of(event: DirectMessageSent) -> Message:
    return Message(
        id=event.id,
        from_=event.actor,
        to=event.recipient,
        text=event.text,
        in_reply_to=event.in_reply_to,
        created_at=rfc3339(event.at),
    )


encode = msgspec.json.Encoder().encode
decode_post = msgspec.json.Decoder(Post).decode
decode_message = msgspec.json.Decoder(Message).decode
