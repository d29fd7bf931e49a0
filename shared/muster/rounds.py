"""A roll-call's escalation schedule: the rounds its policy snapshot makes, and arming them.

A round is one step of one loop, tagged `s<step>l<loop>`, due `after_s` after the roll-call
opened (the post's time) plus, for loop l, l times the loop's length (the last step's
`after_s` plus `repeat.every_s`). A remind is a round of its own, `r<event id>`, due at once.

Arming (the timeline worker, once it has recorded a roll-call's audience; never replay) keeps
the snapshot beside the timers (keys.rollcall_policy) and adds every round to its account's
partition's timer set (keys.rollcall_timers) with ZADD NX: arming again after a crash changes
nothing, and a round already moved out is not re-added by anything but a fresh arming of a
roll-call nobody has armed before. The escalation worker (muster.escalation) moves due rounds
onto the due stream and fires them. This module does no I/O beyond queueing on a pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from muster import keys
from muster.events import EscalationPolicy, EscalationStep, PostPublished
from muster.records import EscalationDue, encode_policy

REMIND_PREFIX = "r"


@dataclass(frozen=True, slots=True)
class Round:
    tag: str
    step: int
    loop: int
    after_s: float


def rounds(policy: EscalationPolicy) -> list[Round]:
    """Every round of `policy`, in the order they fall due."""
    steps = policy.steps
    times = policy.repeat.times if policy.repeat is not None else 0
    period = steps[-1].after_s + (policy.repeat.every_s if policy.repeat is not None else 0)
    return [
        Round(f"s{i}l{loop}", i, loop, step.after_s + loop * period)
        for loop in range(times + 1)
        for i, step in enumerate(steps)
    ]


def round_of(policy: EscalationPolicy, tag: str) -> tuple[EscalationStep, Round] | None:
    """The step and round a tag names in `policy` (None: not one of its rounds)."""
    for found in rounds(policy):
        if found.tag == tag:
            return policy.steps[found.step], found
    return None


def remind_tag(event_id: str) -> str:
    return f"{REMIND_PREFIX}{event_id}"


def arm(pipe: Any, partitions: int, event: PostPublished) -> bool:
    """Queue the arming of `event`'s roll-call on `pipe` (nothing without a policy)."""
    rollcall = event.rollcall
    if rollcall is None or rollcall.escalation is None:
        return False
    p = keys.partition_of(event.as_account, partitions)
    pipe.set(keys.rollcall_policy(p, event.id), encode_policy(rollcall.escalation), nx=True)
    opened_ms = int(event.at.timestamp() * 1000)
    due = {
        EscalationDue(event.id, r.tag).member(): opened_ms + int(r.after_s * 1000)
        for r in rounds(rollcall.escalation)
    }
    pipe.zadd(keys.rollcall_timers(p), due, nx=True)
    return True


def message_id(rollcall: str, round_: str, subject: str, target: str) -> str:
    """The message id of a round's delivery: `<rollcall>-<round>` to the subject themselves
    (one per round, like a post's), `<rollcall>-<round>-<subject>` to someone told about
    them. Stable, so a resend after a crash carries the same Message-ID / webhook-id."""
    base = f"{rollcall}-{round_}"
    return base if subject == target else f"{base}-{subject}"


def parse_message_id(message_id: str) -> tuple[str, str, str | None]:
    """(rollcall, round, subject or None) of an escalation message id."""
    parts = message_id.split("-", 2)
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None
