"""SMS replies that are neither a keyword nor a roll-call code, against the Twilio-compatible
endpoint: the delivery worker sends posts by SMS, signed inbound texts come back, and each is
the sender's reply in the thread of the newest post their phone was sent; idempotent per
MessageSid, checked as a reply in the app is, and the help text for a phone Muster sent nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from delivery.conftest import ADMIN_TOKEN, PUBLIC_URL, Peers, Stack
from delivery.peers import TwilioFake
from muster import keys
from muster.api import inbound, smsreplies

pytestmark = pytest.mark.anyio

BEN = "+15551230002"


async def text_in(s: Stack, sender: str, body: str, sid: str) -> Any:
    """An SMS to Muster's number, as Twilio posts it, signed."""
    params = {
        "MessageSid": sid,
        "AccountSid": TwilioFake.SID,
        "From": sender,
        "To": TwilioFake.FROM,
        "Body": body,
        "NumMedia": "0",
    }
    url = f"{PUBLIC_URL}/v1/inbound/sms"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(TwilioFake.TOKEN).compute_signature(url, params),
    }
    return await s.call("POST", "/v1/inbound/sms", content=urlencode(params), headers=headers)


async def setup(s: Stack) -> dict[str, str]:
    """`boss` posts as team `ops`; ben follows it by SMS, ana in the app only."""
    boss = (await s.account("boss"))["token"]
    await s.account("ops", "team")
    await s.ok("PUT", "/v1/accounts/ops/posters/boss", 204, token=ADMIN_TOKEN)
    ben = (await s.account("ben", phone=BEN))["token"]
    ana = (await s.account("ana"))["token"]
    await s.follow(ben, "ops", "app", "sms")
    await s.follow(ana, "ops", "app")
    await s.routed()
    return {"boss": boss, "ben": ben, "ana": ana}


async def replies(s: Stack, post_id: str, token: str) -> list[dict[str, Any]]:
    await s.routed()
    thread = await s.ok("GET", f"/v1/posts/{post_id}/thread", token=token)
    found: list[dict[str, Any]] = thread["replies"]
    return found


async def log_length(s: Stack) -> int:
    return sum([await s.redis.xlen(keys.events(p)) for p in range(s.settings.partitions)])


async def test_a_text_back_is_a_reply_in_the_thread_of_the_newest_post_sent(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    t = await setup(s)
    older = await s.post(t["boss"], "Water off in building A", as_="ops")
    await s.delivered()
    newer = await s.post(t["boss"], "Building A: stay out until noon", as_="ops")
    await s.delivered()
    assert len([m for m in peers.sms.messages if m.to == BEN]) == 2

    answer = await text_in(s, BEN, "  On my way out, 5 min\n", "SM" + "1" * 32)
    assert answer.status_code == 200
    assert smsreplies.POSTED_TEXT in answer.text
    (reply,) = await replies(s, newer["id"], t["boss"])
    assert (reply["author"], reply["text"]) == ("ben", "On my way out, 5 min")
    assert reply["visibility"] == "internal"
    assert await replies(s, older["id"], t["boss"]) == []

    # the same MessageSid again: nothing more, even once the replay cache is gone (the
    # Idempotency-Key made from the MessageSid holds)
    before = await log_length(s)
    again = await text_in(s, BEN, "On my way out, 5 min", "SM" + "1" * 32)
    assert "<Message>" not in again.text
    await s.redis.delete(*[k async for k in s.redis.scan_iter(match="*inbound:seen:sms:*")])
    again = await text_in(s, BEN, "On my way out, 5 min", "SM" + "1" * 32)
    assert smsreplies.POSTED_TEXT in again.text
    assert await log_length(s) == before
    assert len(await replies(s, newer["id"], t["boss"])) == 1
    assert not await s.dead()


async def test_phones_sent_nothing_and_numbers_that_moved_get_the_help_text(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    t = await setup(s)
    post = await s.post(t["boss"], "Fire drill at 3", as_="ops")
    await s.delivered()
    before = await log_length(s)
    stranger = await text_in(s, "+15559999999", "who is this?", "SM2")
    assert "reply with the number" in stranger.text
    assert await log_length(s) == before

    # ben's number is now someone else's: the text replies for nobody
    await s.ok("PATCH", "/v1/me", token=t["ben"], json={"phone": "+15551230099"})
    before = await log_length(s)
    moved = await text_in(s, BEN, "ok", "SM3")
    assert "reply with the number" in moved.text
    assert await log_length(s) == before
    assert await replies(s, post["id"], t["boss"]) == []


async def test_a_text_back_is_checked_as_a_reply_in_the_app(stack: Stack, peers: Peers) -> None:
    """Too long: refused and told; from a deactivated person: a text from nobody. Nothing is
    written either way."""
    s = stack
    t = await setup(s)
    post = await s.post(t["boss"], "Evacuate floor 2", as_="ops")
    await s.delivered()
    before = await log_length(s)
    long = await text_in(s, BEN, "x" * (s.settings.max_post_chars + 1), "SM4")
    assert "too long" in long.text
    await s.ok("PATCH", "/v1/accounts/ben", token=ADMIN_TOKEN, json={"active": False})
    gone = await text_in(s, BEN, "still here", "SM5")
    assert "reply with the number" in gone.text
    assert await log_length(s) == before + 1  # the deactivation only
    assert await replies(s, post["id"], t["boss"]) == []


async def test_a_word_after_a_roll_call_is_a_reply_in_its_thread_never_an_answer(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    t = await setup(s)
    deadline = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    options = [
        {"key": "safe", "label": "I'm safe", "kind": "ok"},
        {"key": "help", "label": "I need help", "kind": "help"},
    ]
    rc = await s.post(
        t["boss"], "Are you safe?", as_="ops", rollcall={"options": options, "deadline": deadline}
    )
    await s.delivered()
    said = await text_in(s, BEN, "safe", "SM6")
    assert smsreplies.POSTED_TEXT in said.text
    (reply,) = await replies(s, rc["id"], t["boss"])
    assert (reply["author"], reply["text"]) == ("ben", "safe")
    report = await s.ok("GET", f"/v1/rollcalls/{rc['id']}", token=t["boss"])
    assert report["counts"]["answered"] == 0
    # codes and keywords keep their meaning
    assert "Recorded: I'm safe" in (await text_in(s, BEN, "1", "SM7")).text.replace("&apos;", "'")
    assert inbound.STOPPED_TEXT in (await text_in(s, BEN, "STOP", "SM8")).text
