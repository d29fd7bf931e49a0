"""Roll-call answers from outside the app, end to end against the real peers: a roll-call post
goes out by email (aiosmtpd), SMS (the Twilio-compatible endpoint) and webhook; each message
says how to answer; the answers come back through the answer page, signed inbound SMS and
signed webhook callbacks, and the report counts them by channel.

And what must never count: a link scanner (GET, HEAD, every link, forms with no or a made-up
token, every button pressed at once), a forged or replayed inbound SMS, a forged or replayed
webhook callback. A STOP from someone who cannot opt out shows in the report.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook
from twilio.request_validator import RequestValidator

from delivery.conftest import ADMIN_TOKEN, PUBLIC_URL, Peers, Stack
from delivery.peers import TwilioFake
from muster import answerlinks, events, keys
from muster.api import rejections

pytestmark = pytest.mark.anyio

OPTIONS = [
    {"key": "1", "label": "I'm safe", "kind": "ok"},
    {"key": "2", "label": "I need help", "kind": "help"},
    {"key": "3", "label": "Not on site", "kind": "other"},
]
LINK = re.compile(re.escape(PUBLIC_URL) + r"/r/([A-Za-z0-9_-]{16})")
BROWSER = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Safari/604.1"
SCANNER = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"


# --- helpers ------------------------------------------------------------------------------------
class Page(HTMLParser):
    """The links and forms of a page, as a scanner sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.hrefs.append(found["href"] or "")
        elif tag == "form":
            self.forms.append({"action": found.get("action") or "", "fields": {}})
        elif tag == "input" and self.forms and found.get("name"):
            self.forms[-1]["fields"][found["name"]] = found.get("value") or ""


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def human(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answers from here on are not timed as a scanner's (a person reads, then presses:
    the test does not wait the 10 s a person would take)."""
    monkeypatch.setattr(answerlinks, "MIN_AFTER_DELIVERY_S", 0.0)
    monkeypatch.setattr(answerlinks, "MIN_ON_PAGE_S", 0.0)


async def setup_people(s: Stack, peers: Peers) -> dict[str, Any]:
    """`boss` posts as team `ops`; ana gets email, ben SMS, cal a webhook, dee the app only."""
    boss = (await s.account("boss"))["token"]
    await s.account("ops", "team")
    await s.ok("PUT", "/v1/accounts/ops/posters/boss", 204, token=ADMIN_TOKEN)
    people = {
        "ana": await s.account("ana", email="ana@example.test"),
        "ben": await s.account("ben", phone="+15551230002"),
        "cal": await s.account("cal", webhook_url=peers.hook("cal")),
        "dee": await s.account("dee"),
    }
    await s.follow(people["ana"]["token"], "ops", "app", "email")
    await s.follow(people["ben"]["token"], "ops", "app", "sms")
    await s.follow(people["cal"]["token"], "ops", "app", "webhook")
    await s.follow(people["dee"]["token"], "ops", "app")
    await s.routed()
    return {"boss": boss, **people}


async def open_rollcall(s: Stack, token: str, text: str = "Fire alarm in A: are you safe?") -> str:
    deadline = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    post = await s.post(token, text, as_="ops", rollcall={"options": OPTIONS, "deadline": deadline})
    await s.delivered()
    rollcall_id: str = post["id"]
    return rollcall_id


async def report(s: Stack, rollcall_id: str, token: str) -> dict[str, Any]:
    found: dict[str, Any] = await s.ok("GET", f"/v1/rollcalls/{rollcall_id}", token=token)
    return found


async def log_length(s: Stack) -> int:
    return sum([await s.redis.xlen(keys.events(p)) for p in range(s.settings.partitions)])


async def logged(s: Stack, kind: type[events.Event]) -> list[Any]:
    """The events of `kind` in the log, in partition order."""
    found = []
    for p in range(s.settings.partitions):
        entries: Any = await s.redis.xrange(keys.events(p))
        for _, fields in entries:
            event = events.decode(fields[events.STREAM_FIELD])
            if isinstance(event, kind):
                found.append(event)
    return found


async def answers(s: Stack) -> list[events.RollCallAnswered]:
    found: list[events.RollCallAnswered] = await logged(s, events.RollCallAnswered)
    return found


async def rejected(s: Stack) -> list[events.RollCallAnswerRejected]:
    found: list[events.RollCallAnswerRejected] = await logged(s, events.RollCallAnswerRejected)
    return found


def mail_link(peers: Peers, to: str) -> str:
    (mail,) = [m for m in peers.smtp.mails if m.recipients == [to]][-1:]
    plain = mail.message.get_body(("plain",))
    assert plain is not None
    found = LINK.search(plain.get_content())
    assert found is not None, "the roll-call email carries no answer link"
    return found.group(1)


def sms_to(peers: Peers, phone: str) -> list[str]:
    return [m.body for m in peers.sms.messages if m.to == phone]


async def text_in(
    s: Stack, sender: str, body: str, sid: str, *, token: str = TwilioFake.TOKEN
) -> Any:
    """An SMS to Muster's number, as Twilio posts it (signed with `token`)."""
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
        "X-Twilio-Signature": RequestValidator(token).compute_signature(url, params),
    }
    return await s.call("POST", "/v1/inbound/sms", content=urlencode(params), headers=headers)


def signed(
    secret: str, webhook_id: str, body: bytes, when: datetime | None = None
) -> dict[str, str]:
    moment = when or datetime.now(UTC)
    return {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, moment, body.decode()),
    }


# --- end to end -----------------------------------------------------------------------------------
async def test_answers_by_link_sms_code_and_webhook_are_counted_by_channel(
    stack: Stack, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = stack
    cast = await setup_people(s, peers)
    boss = cast["boss"]
    rc = await open_rollcall(s, boss)

    # each message says how to answer: its own link, its own codes, its own callback
    link = mail_link(peers, "ana@example.test")
    html = peers.smtp.mails[-1].message.get_body(("html",))
    assert html is not None
    assert f"{PUBLIC_URL}/r/{link}" in html.get_content()
    (sms,) = sms_to(peers, "+15551230002")
    assert "Reply 1 I'm safe, 2 I need help, 3 Not on site, or answer at" in sms
    sms_link = LINK.search(sms)
    assert sms_link is not None
    assert sms_link.group(1) != link  # per recipient and channel
    (hook,) = peers.webhooks.accepted()
    payload = Webhook(cast["cal"]["webhook_secret"]).verify(hook.body, hook.headers)
    respond_url = payload["respond_url"]
    assert respond_url.startswith(f"{PUBLIC_URL}/v1/rollcalls/callback/")
    assert payload["data"]["rollcall"]["options"] == OPTIONS

    # the page: GET and HEAD change nothing
    before = await log_length(s)
    page = await s.call("GET", f"/r/{link}", headers={"User-Agent": BROWSER})
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "noindex" in page.headers["x-robots-tag"]
    assert "Answering as" in page.text
    assert "@ana" in page.text
    forms = parse(page.text).forms
    assert [f["fields"]["option"] for f in forms] == ["1", "2", "3"]
    assert (await s.call("HEAD", f"/r/{link}")).status_code == 200
    assert await log_length(s) == before
    assert (await report(s, rc, boss))["counts"]["answered"] == 0

    # a person presses a button: their answer, by email
    human(monkeypatch)
    help_form = forms[1]
    pressed = await s.call(
        "POST",
        help_form["action"],
        content=urlencode(help_form["fields"]),
        headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": BROWSER},
    )
    assert pressed.status_code == 200
    assert "your answer is recorded" in pressed.text
    mine = await s.ok("GET", f"/v1/rollcalls/{rc}", token=cast["ana"]["token"])
    assert (mine["answer"]["option"], mine["answer"]["channel"]) == ("2", "email")
    assert mine["answer"]["suspect"] is False

    # ben texts a code back; the same MessageSid again (a replay) changes nothing
    reply = await text_in(s, "+15551230002", " 1 ", "SM" + "a" * 32)
    assert reply.status_code == 200
    assert "Recorded: I&apos;m safe" in reply.text or "Recorded: I'm safe" in reply.text
    replayed = await text_in(s, "+15551230002", "3", "SM" + "a" * 32)
    assert replayed.status_code == 200
    assert "<Message>" not in replayed.text
    mine = await s.ok("GET", f"/v1/rollcalls/{rc}", token=cast["ben"]["token"])
    assert (mine["answer"]["option"], mine["answer"]["channel"]) == ("1", "sms")

    # cal's webhook answers through its callback; forged and replayed ones change nothing
    path = respond_url.removeprefix(PUBLIC_URL)
    body = b'{"option":"3"}'
    secret = cast["cal"]["webhook_secret"]
    good = await s.call("POST", path, content=body, headers=signed(secret, "msg_cal_1", body))
    assert good.status_code == 200, good.text
    assert (good.json()["channel"], good.json()["option"]) == ("webhook", "3")
    before = await log_length(s)
    again = await s.call("POST", path, content=body, headers=signed(secret, "msg_cal_1", body))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "replayed"
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    forged = await s.call("POST", path, content=body, headers=signed(other, "msg_cal_2", body))
    assert forged.status_code == 401
    stale = signed(secret, "msg_cal_3", body, datetime.now(UTC) - timedelta(minutes=10))
    assert (await s.call("POST", path, content=body, headers=stale)).status_code == 401
    unsigned = await s.call("POST", path, content=body, headers={"webhook-id": "msg_cal_4"})
    assert unsigned.status_code == 401
    assert await log_length(s) == before

    # the report counts each by its channel, with the provider's references kept
    counts = (await report(s, rc, boss))["counts"]
    assert counts["answered"] == counts["accounted_for"] == 3
    assert counts["by_channel"] == {"email": 1, "sms": 1, "webhook": 1}
    assert counts["by_option"] == {"1": 1, "2": 1, "3": 1}
    by_person = {e.recipient: e for e in await answers(s)}
    assert by_person["ben"].source_ref == "SM" + "a" * 32
    assert by_person["cal"].source_ref == "msg_cal_1"
    evidence = by_person["ana"].evidence
    assert evidence is not None
    assert evidence.user_agent == BROWSER
    assert evidence.since_delivery_s is not None
    assert not evidence.suspect_because
    assert not await s.dead()


async def test_a_link_scanner_never_accounts_for_anyone(
    stack: Stack, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET, HEAD, every link on the page, every form with no token, a made-up one or another
    link's, then every button pressed with the page's own token as a headless browser would:
    nobody is accounted for. A person answering later is; a scanner coming back after that
    never undoes it."""
    s = stack
    cast = await setup_people(s, peers)
    rc = await open_rollcall(s, cast["boss"])
    link = mail_link(peers, "ana@example.test")
    sms_link = LINK.search(sms_to(peers, "+15551230002")[0])
    assert sms_link is not None
    form_type = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": SCANNER}

    async def scan(target: str) -> None:
        url = f"/r/{target}"
        for method in ("GET", "HEAD"):
            assert (await s.call(method, url, headers={"User-Agent": SCANNER})).status_code == 200
        page = parse((await s.call("GET", url, headers={"User-Agent": SCANNER})).text)
        for href in page.hrefs:
            if href.startswith("/"):
                await s.call("GET", href, headers={"User-Agent": SCANNER})
        for form in page.forms:
            fields = dict(form["fields"])
            made_up = {**fields, "token": f"{answerlinks.now_ms()}.{'A' * 22}"}
            for attempt in ({"option": fields.get("option", "1")}, made_up, {}):
                refused = await s.call(
                    "POST", form["action"], content=urlencode(attempt), headers=form_type
                )
                assert refused.status_code in (400, 403, 422), refused.status_code
        other = parse((await s.call("GET", f"/r/{sms_link.group(1)}")).text).forms[0]["fields"]
        crossed = {"option": "1", "token": other["token"]}  # another link's page token
        refused = await s.call("POST", url, content=urlencode(crossed), headers=form_type)
        assert refused.status_code == 403
        for form in page.forms:  # clicks every button at once, with the real token
            await s.call(
                "POST", form["action"], content=urlencode(form["fields"]), headers=form_type
            )

    await scan(link)
    counts = (await report(s, rc, cast["boss"]))["counts"]
    assert counts["accounted_for"] == 0
    assert counts["suspect"] == counts["answered"] == 1
    (row,) = [
        r
        for r in await s.ok("GET", f"/v1/rollcalls/{rc}/recipients", token=cast["boss"])
        if r["handle"] == "ana"
    ]
    assert row["suspect"] is True
    assert all(e.suspect for e in await answers(s))
    assert {e.evidence.suspect_because for e in await answers(s) if e.evidence} <= set(
        answerlinks.SUSPECT_REASONS
    )

    # the same fast clicks from an ordinary browser are suspect too (timing, not the name)
    browser = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": BROWSER}
    page = parse((await s.call("GET", f"/r/{link}", headers={"User-Agent": BROWSER})).text)
    quick = await s.call(
        "POST", page.forms[0]["action"], content=urlencode(page.forms[0]["fields"]), headers=browser
    )
    assert "Please confirm" in quick.text
    assert (await report(s, rc, cast["boss"]))["counts"]["accounted_for"] == 0

    # the person, later: confirmed, accounted for; a scanner returning never undoes it
    human(monkeypatch)
    confirm = parse(quick.text).forms[0]
    done = await s.call(
        "POST", confirm["action"], content=urlencode(confirm["fields"]), headers=browser
    )
    assert "your answer is recorded" in done.text
    assert (await report(s, rc, cast["boss"]))["counts"]["accounted_for"] == 1
    monkeypatch.undo()
    await scan(link)
    counts = (await report(s, rc, cast["boss"]))["counts"]
    assert counts["accounted_for"] == 1
    assert counts["suspect"] == 0
    assert counts["by_option"]["1"] == 1


async def test_bad_links_are_uniform_404s_and_change_nothing(stack: Stack, peers: Peers) -> None:
    s = stack
    cast = await setup_people(s, peers)
    await open_rollcall(s, cast["boss"])
    link = mail_link(peers, "ana@example.test")
    before = await log_length(s)
    for bad in ("A" * 16, link[:-1] + ("A" if link[-1] != "A" else "B"), "short", "x" * 200):
        for method in ("GET", "POST"):
            response = await s.call(method, f"/r/{bad}", content=b"option=1&token=1.x")
            assert response.status_code == 404, (bad, method)
            assert "not valid or has expired" in response.text
    assert (
        await s.call("POST", "/v1/rollcalls/callback/" + link, content=b"{}")
    ).status_code == 404
    # a webhook's callback link never opens the page (it would answer unsigned)
    (hook,) = peers.webhooks.accepted()
    callback = msgspec.json.decode(hook.body)["respond_url"].rsplit("/", 1)[1]
    assert (await s.call("GET", f"/r/{callback}")).status_code == 404
    assert (await s.call("POST", f"/r/{callback}", content=b"option=1")).status_code == 404
    assert await log_length(s) == before


# --- SMS --------------------------------------------------------------------------------------------
async def test_two_open_roll_calls_on_one_phone_get_distinct_codes(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    cast = await setup_people(s, peers)
    boss = cast["boss"]
    first = await open_rollcall(s, boss, "Fire alarm in A: are you safe?")
    second = await open_rollcall(s, boss, "Flooding in B: are you safe?")
    texts = sms_to(peers, "+15551230002")
    assert "Reply 1 I'm safe, 2 I need help, 3 Not on site" in texts[0]
    assert "Reply 4 I'm safe, 5 I need help, 6 Not on site" in texts[1]

    assert "Recorded: I need help" in (await text_in(s, "+15551230002", "5", "SM1")).text
    assert "Recorded: Not on site" in (await text_in(s, "+15551230002", "3", "SM2")).text
    ben = cast["ben"]["token"]
    one = (await s.ok("GET", f"/v1/rollcalls/{first}", token=ben))["answer"]
    two = (await s.ok("GET", f"/v1/rollcalls/{second}", token=ben))["answer"]
    assert (one["option"], one["channel"]) == ("3", "sms")
    assert (two["option"], two["channel"]) == ("2", "sms")

    # not a code of this phone, another phone: no answer, each refusal recorded
    before = await log_length(s)
    assert "does not answer" in (await text_in(s, "+15551230002", "7", "SM3")).text
    assert "does not answer" in (await text_in(s, "+15559999999", "1", "SM5")).text
    assert await log_length(s) == before + 2
    assert sorted(e.source_ref for e in await rejected(s)) == ["SM3", "SM5"]
    assert len(await answers(s)) == 2


async def test_forged_inbound_sms_is_refused_and_changes_nothing(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    cast = await setup_people(s, peers)
    rc = await open_rollcall(s, cast["boss"])
    before = await log_length(s)
    forged = await text_in(s, "+15551230002", "1", "SM9", token="not-our-twilio-auth-token")
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "bad_signature"
    assert await log_length(s) == before
    assert (await report(s, rc, cast["boss"]))["counts"]["answered"] == 0
    # the genuine text with that MessageSid is still taken: a forgery claims nothing
    assert "Recorded" in (await text_in(s, "+15551230002", "1", "SM9")).text


async def test_stop_from_a_mandatory_member_shows_and_other_channels_carry_on(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    boss = (await s.account("boss"))["token"]
    await s.account("ops", "team")
    await s.ok("PUT", "/v1/accounts/ops/posters/boss", 204, token=ADMIN_TOKEN)
    await s.account("eve", email="eve@example.test", phone="+15551230005")
    await s.ok(
        "PUT",
        "/v1/accounts/ops/enrolments",
        202,
        token=ADMIN_TOKEN,
        json={"followers": ["eve"], "channels": ["app", "email", "sms"], "mandatory": True},
    )
    await s.routed()
    rc = await open_rollcall(s, boss)
    assert len(sms_to(peers, "+15551230005")) == 1

    stopped = await text_in(s, "+15551230005", "STOP", "SM10")
    assert "no more SMS" in stopped.text
    counts = (await report(s, rc, boss))["counts"]
    assert counts["sms_opted_out"] == 1
    (row,) = await s.ok("GET", f"/v1/rollcalls/{rc}/recipients", token=boss)
    assert (row["handle"], row["sms_opted_out"], row["state"]) == ("eve", True, "notified")
    # still mandatory, still asked: the next roll-call reaches eve by email
    mails = len([m for m in peers.smtp.mails if m.recipients == ["eve@example.test"]])
    later = await open_rollcall(s, boss, "All clear? Confirm you are out")
    assert len([m for m in peers.smtp.mails if m.recipients == ["eve@example.test"]]) == mails + 1
    assert (await report(s, later, boss))["counts"]["sms_opted_out"] == 1

    await text_in(s, "+15551230005", "START", "SM11")
    assert (await report(s, rc, boss))["counts"]["sms_opted_out"] == 0


async def test_refusals_are_bounded_per_channel_whatever_the_number_of_phones(
    stack: Stack, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rejections, "REJECTIONS_PER_CHANNEL_PER_HOUR", 2)
    s = stack
    before = await log_length(s)
    for i in range(4):  # four phones, one junk code each
        answer = await text_in(s, f"+1555999000{i}", "1", f"SM5{i}")
        assert "does not answer" in answer.text
    assert await log_length(s) == before + 2
    assert len(await rejected(s)) == 2


def test_codes_are_digits_only() -> None:
    from muster.api.answering import code_of

    assert [code_of(b) for b in ("1", " 12 ", "0", "STOP", "1.", "\u0661", "12345", "YES", "")] == [
        1,
        12,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    ]


def test_suspect_reasons() -> None:
    reason = answerlinks.suspect_reason
    assert reason(BROWSER, 60.0, 5.0) == ""
    assert reason(SCANNER, 60.0, 5.0) == "scanner_user_agent"
    assert reason("", 60.0, 5.0) == "scanner_user_agent"
    assert reason(BROWSER, 3.0, 5.0) == "soon_after_delivery"
    assert reason(BROWSER, 60.0, 0.2) == "soon_after_page"


def test_the_code_block_codec_matches_the_script() -> None:
    from muster.records import SmsCodeBlock, sms_code_block_of

    block = SmsCodeBlock(4, 3, 1_700_000_000_000)
    assert sms_code_block_of(block.encode()) == block
    assert [block.option_index(c) for c in (3, 4, 6, 7)] == [None, 0, 2, None]
    assert (
        msgspec.json.decode(msgspec.json.encode({"v": block.encode()}))["v"] == "4|3|1700000000000"
    )


@pytest.mark.parametrize(
    "text",
    [
        "Fire alarm in A: are you safe?",
        "Évacuation — bâtiment A ✓",  # not ASCII, short lines: 8bit
        "x" * 400,  # a line too long for 7bit/8bit: the library encodes the body
        "Ünïcödé " * 60,
    ],
)
def test_a_roll_call_email_is_one_rendering_with_each_persons_link(text: str) -> None:
    """Each recipient's roll-call email is the post's rendered once, with their link put in
    (email.LinkedMail): valid MIME whatever the text, bodies exactly the post's parts."""
    from muster import views
    from muster.delivery.content import answer_link, decode_content, link
    from muster.delivery.email import Composer, _post_parts

    view = views.Post(
        id="112365718733521099",
        author="boss",
        as_account="ops",
        text=text,
        visibility="internal",
        severity="critical",
        in_reply_to=None,
        created_at="2024-05-01T12:00:01.011Z",
        rollcall=views.RollCallQuestion(
            options=[events.RollCallOption(**o) for o in OPTIONS],
            deadline="2024-05-01T13:00:00Z",
            grace_s=86400,
        ),
    )
    content = decode_content("post", view.id, views.encode(view))
    composer = Composer("alerts@muster.test", PUBLIC_URL)
    made = []
    for answer in ("AbCdEfGhIjKlMnOp", "0123456789-_abcd"):
        url = answer_link(PUBLIC_URL, answer)
        raw = composer.message("d1", content, "ana@example.test", answer_url=url)
        made.append(raw)
        message = email_of(raw)
        assert message.defects == []
        subject, plain, rich = _post_parts(view, link(PUBLIC_URL, content), url)
        assert message["Subject"] == email_of(f"Subject: {subject}\r\n\r\n".encode())["Subject"]
        for kind, expected in (("plain", plain), ("html", rich)):
            part = message.get_body((kind,))
            assert part is not None
            assert part.defects == []
            assert part.get_content().replace("\r\n", "\n") == expected
            assert url in part.get_content()
    assert made[0] != made[1]
    assert made[0] == composer.message(
        "d1", content, "ana@example.test", answer_url=answer_link(PUBLIC_URL, "AbCdEfGhIjKlMnOp")
    )  # a resend is byte for byte the same


def email_of(raw: bytes) -> Any:
    import email
    import email.policy

    return email.message_from_bytes(raw, policy=email.policy.default)


async def test_a_closed_roll_call_takes_no_answers_from_outside(
    stack: Stack, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = stack
    cast = await setup_people(s, peers)
    boss = cast["boss"]
    rc = await open_rollcall(s, boss)
    human(monkeypatch)
    # ben answers through the link in his SMS: channel sms; pressing twice records it once
    sms_link = LINK.search(sms_to(peers, "+15551230002")[0])
    assert sms_link is not None
    form = parse((await s.call("GET", f"/r/{sms_link.group(1)}")).text).forms[2]
    browser = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": BROWSER}
    for _ in range(2):
        pressed = await s.call(
            "POST", form["action"], content=urlencode(form["fields"]), headers=browser
        )
        assert pressed.status_code == 200
    assert [(e.recipient, e.channel, e.option) for e in await answers(s)] == [("ben", "sms", "3")]

    link = mail_link(peers, "ana@example.test")
    page = parse((await s.call("GET", f"/r/{link}")).text)
    (hook,) = peers.webhooks.accepted()
    respond = msgspec.json.decode(hook.body)["respond_url"].removeprefix(PUBLIC_URL)
    await s.ok("POST", f"/v1/rollcalls/{rc}/close", token=boss)
    before = await log_length(s)
    closed = await s.call("GET", f"/r/{link}")
    assert closed.status_code == 410
    assert "closed" in closed.text
    assert not parse(closed.text).forms
    pressed = await s.call(
        "POST", page.forms[0]["action"], content=urlencode(page.forms[0]["fields"]), headers=browser
    )
    assert pressed.status_code == 410
    assert "closed" in (await text_in(s, "+15551230002", "1", "SM20")).text
    body = b'{"option":"1"}'
    late = await s.call(
        "POST", respond, content=body, headers=signed(cast["cal"]["webhook_secret"], "m1", body)
    )
    assert late.status_code == 410
    assert late.json()["error"]["code"] == "rollcall_closed"
    # each refusal by a channel is one RollCallAnswerRejected, and nothing else changed
    assert await log_length(s) == before + 3
    by_channel = {e.channel: e for e in await rejected(s)}
    assert sorted(by_channel) == ["email", "sms", "webhook"]
    assert {(e.rollcall, e.reason) for e in by_channel.values()} == {(rc, "rollcall_closed")}
    assert [by_channel[c].recipient for c in ("email", "sms", "webhook")] == ["ana", "ben", "cal"]
    assert by_channel["sms"].source_ref == "SM20"
    assert by_channel["webhook"].source_ref == "m1"
    assert by_channel["email"].source_ref == link_hash(link)  # never the link itself
    assert [(e.recipient, e.option) for e in await answers(s)] == [("ben", "3")]
    counts = (await report(s, rc, boss))["counts"]
    assert (counts["answered"], counts["by_channel"]) == (1, {"sms": 1})
    # a scanner posting a made-up form to a closed link is refused and not recorded
    made_up = await s.call(
        "POST", f"/r/{link}", content=urlencode({"option": "1", "token": "x"}), headers=browser
    )
    assert made_up.status_code == 410
    assert await log_length(s) == before + 3


def link_hash(link: str) -> str:
    """How a rejection names a link: its hash, never the link (a bearer token)."""
    return rejections.subject_hash("link", link)


async def test_refused_codes_are_recorded_once_each_and_bounded_per_phone(
    stack: Stack, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A code nobody was sent, from a known phone or from one that matches nobody, is one
    RollCallAnswerRejected each (a replayed MessageSid none more); past the per-phone limit
    the sender is still told, and nothing more is appended; a forged one is never recorded."""
    monkeypatch.setattr(rejections, "REJECTIONS_PER_SUBJECT_PER_HOUR", 2)
    s = stack
    cast = await setup_people(s, peers)
    rc = await open_rollcall(s, cast["boss"])
    before = await log_length(s)
    wrong = await text_in(s, "+15551230002", "7", "SM30")
    assert "does not answer any open roll-call" in wrong.text
    await text_in(s, "+15551230002", "7", "SM30")  # the same text again: handled once
    stranger = await text_in(s, "+15559999999", "1", "SM31")
    assert "does not answer any open roll-call" in stranger.text
    forged = await text_in(s, "+15559999999", "1", "SM32", token="not-our-twilio-auth-token")
    assert forged.status_code == 403
    assert await log_length(s) == before + 2
    found = await rejected(s)
    assert sorted((e.source_ref, e.channel, e.reason, e.actor) for e in found) == [
        ("SM30", "sms", "unknown_code", "sms-in"),
        ("SM31", "sms", "unknown_code", "sms-in"),
    ]
    assert {e.rollcall for e in found} == {None}
    assert {e.recipient for e in found} == {None}
    for i in range(4):  # a phone texting junk in a loop
        assert "does not answer" in (await text_in(s, "+15559999999", "5", f"SM4{i}")).text
    assert await log_length(s) == before + 3  # one more (its limit is 2), then nothing
    assert (await report(s, rc, cast["boss"]))["counts"]["answered"] == 0


async def test_one_link_gives_a_bounded_number_of_answers(
    stack: Stack, peers: Peers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each answer is an event for good, and a fresh page token is one GET away: past
    LINK_ANSWERS_PER_HOUR a link is 429, and nothing more is appended."""
    from muster.api import answering

    monkeypatch.setattr(answering, "LINK_ANSWERS_PER_HOUR", 3)
    human(monkeypatch)
    s = stack
    cast = await setup_people(s, peers)
    await open_rollcall(s, cast["boss"])
    link = mail_link(peers, "ana@example.test")
    browser = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": BROWSER}
    statuses = []
    for i in range(5):
        form = parse((await s.call("GET", f"/r/{link}")).text).forms[i % 3]
        pressed = await s.call(
            "POST", form["action"], content=urlencode(form["fields"]), headers=browser
        )
        statuses.append(pressed.status_code)
    assert statuses == [200, 200, 200, 429, 429]
    assert len(await answers(s)) == 3
