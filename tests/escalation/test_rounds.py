"""The schedule a policy snapshot makes, who counts as accounted for, and the due entries'
codec: pure functions, no Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from muster import rounds
from muster.errors import EventDecodeError
from muster.events import EscalationPolicy, EscalationRepeat, EscalationStep
from muster.records import EscalationDue, RollCallAnswer, accounted_for, decode_due

STEPS = (
    EscalationStep(after_s=60, to="recipient", channels="chosen"),
    EscalationStep(after_s=300, to="manager", channels=("email",)),
)


def test_rounds_of_steps_and_loops() -> None:
    once = EscalationPolicy(name="p", version=1, steps=STEPS)
    assert [(r.tag, r.after_s) for r in rounds.rounds(once)] == [("s0l0", 60), ("s1l0", 300)]
    looped = EscalationPolicy(
        name="p", version=2, steps=STEPS, repeat=EscalationRepeat(times=2, every_s=100)
    )
    # each loop starts every_s after the previous loop's last step: a period of 300 + 100
    assert [(r.tag, r.step, r.loop, r.after_s) for r in rounds.rounds(looped)] == [
        ("s0l0", 0, 0, 60),
        ("s1l0", 1, 0, 300),
        ("s0l1", 0, 1, 460),
        ("s1l1", 1, 1, 700),
        ("s0l2", 0, 2, 860),
        ("s1l2", 1, 2, 1100),
    ]
    step, found = rounds.round_of(looped, "s1l2") or (None, None)
    assert step == STEPS[1]
    assert found is not None
    assert found.after_s == 1100
    assert rounds.round_of(looped, "s1l3") is None
    assert rounds.round_of(once, "r123") is None


def test_message_ids_are_a_function_of_the_round() -> None:
    assert rounds.message_id("42", "s0l0", "ana", "ana") == "42-s0l0"
    assert rounds.message_id("42", "s1l0", "ana", "mgr") == "42-s1l0-ana"
    assert rounds.parse_message_id("42-s0l0") == ("42", "s0l0", None)
    assert rounds.parse_message_id("42-s1l0-ana_b") == ("42", "s1l0", "ana_b")
    assert rounds.parse_message_id("42-r117") == ("42", "r117", None)


def answer(channel: str, suspect: bool) -> RollCallAnswer:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return RollCallAnswer(
        option="1", kind="ok", channel=channel, at=at, actor="a", suspect=suspect, event="1"
    )


def test_only_an_answer_that_counts_stops_escalation() -> None:
    assert not accounted_for(None)
    assert accounted_for(answer("app", False))
    assert not accounted_for(answer("link", True))  # looks automated: kept, escalation goes on
    assert accounted_for(answer("proxy", True))  # someone answered for them


def test_due_entries_round_trip_and_junk_is_refused() -> None:
    due = EscalationDue("117738497043791936", "s1l0")
    assert decode_due(due.member()) == due
    assert decode_due(due.member().encode()) == due
    for junk in (b"", b"no-bar", b"abc|s0l0", b"123|"):
        with pytest.raises(EventDecodeError):
            decode_due(junk)
