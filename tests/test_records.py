"""Stored values have one codec each (muster.records), and every Lua script lives in
shared/muster/lua behind one loader.

- A delivery request is not an event: the event decoder refuses it, its own codec reads the
  payload stored before it left the event union (tests/fixtures/records) and what routing's
  Lua appends today (tests/delivery/test_routing.py decodes that with it).
- Statuses, follow records, rules and live entries round-trip through their codec.
- No Python module carries Lua; every script file is used; every include resolves once.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from muster import events, records, scripts
from muster.errors import EventDecodeError
from muster.records import (
    ROLLCALL_HANDLED_TAIL,
    ROLLCALL_UNHANDLED_TAIL,
    RollCallAnswer,
    encode_rollcall_answer,
    rollcall_answer_of,
)

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "shared" / "muster" / "lua"
FIXTURES = Path(__file__).parent / "fixtures" / "records"


def test_a_delivery_request_is_not_an_event_but_its_stored_payload_still_decodes() -> None:
    stored = (FIXTURES / "DeliveryRequested.json").read_bytes()
    with pytest.raises(EventDecodeError):
        events.decode(stored)
    request = records.decode_request(stored)
    assert request.id == f"{request.message_id}.{request.recipient}.{request.channel}"
    again = records.decode_request(records.encode_request(request))
    assert again == request
    assert b'"type":"DeliveryRequested"' in records.encode_request(request)
    with pytest.raises(EventDecodeError):
        records.decode_request(b'{"type": "PostPublished"}')


def test_codecs_round_trip() -> None:
    status = records.Status("failed", 3, "SMTP 550 no such user | really")
    assert records.status_of(status.encode()) == status
    assert records.status_of("pending|0|") == records.Status("pending", 0, "")  # Lua writes it
    for broken in (None, "", "sent", "sent|x|", "queued|1|"):
        assert records.status_of(broken) is None
    follow = records.Follow("ops", ("app", "email"), True)
    assert records.follow_of("ops", follow.encode()) == follow
    rule = records.Rule("ops", ("app", "sms"), False, "117737")
    assert records.rule_of("ops", rule.encode()) == rule
    assert records.rule_of("ops", "app,sms|1") == records.Rule("ops", ("app", "sms"), True, None)
    for entry in (
        records.LiveEntry(
            kind="post", id="1", account="ops", author="pat", visibility="public", data=b"{}"
        ),
        records.LiveEntry(kind="dm", id="2", sender="mia", recipient="pat", data=b"{}"),
        records.LiveEntry(kind="unfollow", follower="mia", account="ops"),
    ):
        stored = {
            k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in entry.fields().items()
        }
        assert records.live_entry_of(stored) == entry


def test_no_python_module_carries_lua() -> None:
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        assert "redis.call(" not in path.read_text(), f"{path}: Lua belongs in shared/muster/lua"


def test_every_script_is_used_and_every_include_resolves() -> None:
    sources = "".join(
        p.read_text()
        for p in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").rglob("*.py")]
    )
    used = set(re.findall(r'scripts\.(?:source|register)\((?:redis, )?"(\w+)"\)', sources))
    included = {
        m
        for p in LUA.glob("*.lua")
        for m in re.findall(r"^--! include (\w+)$", p.read_text(), re.M)
    }
    on_disk = {p.stem for p in LUA.glob("*.lua")}
    assert on_disk == used | included, "a Lua file nobody loads, or a load of a missing one"
    for name in used:
        text = scripts.source(name)
        assert "--! include" not in text
        for snippet in included:
            first_line = (LUA / f"{snippet}.lua").read_text().splitlines()[0]
            assert text.count(first_line) <= 1, f"{snippet} included twice in {name}"


def test_a_rollcall_answer_ends_with_the_field_the_script_swaps() -> None:
    """lua/rollcall_answer.lua marks help handled by swapping the record's last field."""
    answer = RollCallAnswer(
        option="2", kind="help", channel="app", at=datetime.now(UTC), actor="ana", event="1"
    )
    raw = encode_rollcall_answer(answer)
    assert raw.endswith(ROLLCALL_UNHANDLED_TAIL)
    swapped = raw[: -len(ROLLCALL_UNHANDLED_TAIL)] + ROLLCALL_HANDLED_TAIL
    assert rollcall_answer_of(swapped) == msgspec.structs.replace(answer, handled=True)
