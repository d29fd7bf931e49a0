"""Issue 15's "done when": one roll-call to 300 people, answered on every channel, escalated on
schedule to the unanswered and then to their managers, with the report right at every step.

Everything real but a person's reading time (`human`): the api (in-process, over ASGI), a
second api on uvicorn serving the live stream (its own hub, as another replica), the
timeline, delivery and escalation workers on 4 partitions, the mail-in SMTP listener (smtplib
on loopback), an SMTP sink, a Twilio-compatible SMS endpoint and a webhook receiver
(delivery/peers.py). The 300 people are a team's enrolled members, each with a manager (one
of four), split by how they can be reached: the app only, email, SMS, a webhook. They answer
as they would: the app's API; the link in their email (GET the page, POST its form) or a
reply to the email through `muster mail-in`; a reply code texted back (a signed Twilio
request); a signed callback to the webhook's `respond_url`. One answer asks for help: the
stream says so at once, and `help_open` counts it until it is marked handled.

The escalation worker starts once those answers are in, so who is unanswered when step 1
fires is exact however loaded the machine is (the answers take seconds, more on a busy
machine); step 1, due 10 s after the roll-call opened, normally fires on its timer, and on a
slow machine at once, late, as the contract allows — never before its time. It reminds the
unanswered on the channels they chose (those reachable only in the app are unreachable); two
of them answer their reminders (a reply to the reminder email, a code texted back); step 2,
with the worker running well before it is due, tells each remaining one's manager, one email
per person, and nobody about a person who answered. A remind then goes to the same people
again, and counts as no step. The report, the live report, `recipients?status=unanswered`
and, at the end, the groups by manager and the export are checked after each stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import smtplib
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
import pytest
from escalation.conftest import escalation_worker, logged, rounds_done, told
from harness import bearer
from standardwebhooks.webhooks import Webhook
from timeline.conftest import _uvicorn

from delivery.conftest import ADMIN_TOKEN, OpenStack, Peers, Stack, until
from delivery.test_mail_in import DOMAIN, SECRET, mail_in, reply
from delivery.test_rollcall_answers import BROWSER, LINK, human, parse, signed, text_in
from muster import events
from muster.settings import Settings

pytestmark = pytest.mark.anyio

PARTITIONS = 4
OPTIONS = [
    {"key": "1", "label": "I'm safe", "kind": "ok"},
    {"key": "2", "label": "I need help", "kind": "help"},
    {"key": "3", "label": "Not on site", "kind": "other"},
]
STEP_1_S = 10.0
"""Step 1 (remind the person) this long after the roll-call opens: past the answers on an
idle machine, so it normally fires on its timer; a busy machine fires it late, at once."""
STEP_2_S = 30.0
"""Step 2 (tell the manager): room after step 1 for two people to answer their reminders."""
WAIT_S = 45.0
LATE_S = 10.0
"""How late a step may fire when its worker was running before it was due (a tick is 250 ms;
the rest is room for a busy machine)."""
MANAGERS = ("mgr_a", "mgr_b", "mgr_c", "mgr_d")

# Who is who: (handle prefix, how many, how many answer and how).
APP, EMAIL, SMS, HOOK = "app", "mail", "sms", "hook"
COUNTS = {APP: 60, EMAIL: 90, SMS: 75, HOOK: 75}
APP_ANSWERS = 25
LINK_ANSWERS = 20  # the first 20 email people answer by the link in the email
MAIL_ANSWERS = 20  # the next 20 reply to it
SMS_ANSWERS = 25
HOOK_ANSWERS = 25


def handles(kind: str) -> list[str]:
    return [f"{kind}{i:03d}" for i in range(COUNTS[kind])]


def manager_of(handle: str) -> str:
    return MANAGERS[int(handle[-3:]) % len(MANAGERS)]


def option_for(i: int) -> str:
    """Mostly safe, some not on site (the one help answer is given on its own)."""
    return "3" if i % 5 == 4 else "1"


def phone_of(handle: str) -> str:
    return f"+1555200{int(handle[-3:]):04d}"


@pytest.fixture
def e2e_settings(delivery_settings: Settings) -> Settings:
    return msgspec.structs.replace(
        delivery_settings,
        partitions=PARTITIONS,
        # Nothing crashes here: at the suite's 500 ms, a batch of sends slower than that on a
        # busy machine is reclaimed while still in hand and sent twice (at least once, under
        # the same ids), and "exactly one notice per person" would count the machine's load.
        claim_idle_ms=30_000,
        mail_in_secret=SECRET,
        mail_in_domain=DOMAIN,
    )


@pytest.fixture
async def stack(e2e_settings: Settings, open_stack: OpenStack) -> AsyncIterator[Stack]:
    async with open_stack(e2e_settings) as opened:
        yield opened


class Live:
    """The roll-call's live stream, read in the background from a second api process (the
    app on uvicorn, with its own hub, as another replica would be): every event, in order."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.task: asyncio.Task[None] | None = None

    def watch(self, rc: str, token: str) -> None:
        self.task = asyncio.create_task(self._follow(rc, token))

    async def _follow(self, rc: str, token: str) -> None:
        path = f"/v1/rollcalls/{rc}/stream"
        async with self.client.stream("GET", path, headers=bearer(token)) as response:
            assert response.status_code == 200
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "":
                    if "data" in fields:
                        self.events.append((fields["event"], json.loads(fields["data"])))
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")

    async def shows(self, report: dict[str, Any]) -> None:
        """The stream's latest report becomes `report` (bounded)."""

        async def latest() -> bool:
            assert self.task is not None
            if self.task.done():
                self.task.result()  # it ended or failed: say why
            reports = [data for kind, data in self.events if kind == "report"]
            return bool(reports) and reports[-1] == report

        await until(latest, "the live report", WAIT_S)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@pytest.fixture
async def live(stack: Stack, e2e_settings: Settings) -> AsyncIterator[Live]:
    async with (
        _uvicorn(e2e_settings) as url,
        httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(30.0)) as client,
    ):
        watching = Live(client)
        try:
            yield watching
        finally:
            await watching.stop()


@pytest.fixture
async def mail_port(stack: Stack, e2e_settings: Settings) -> AsyncIterator[int]:
    """`muster mail-in` on a loopback port, beside the stack."""
    async with mail_in(e2e_settings) as port:
        yield port


async def gathered(calls: list[Any], at_once: int = 16) -> list[Any]:
    """Run the coroutines `at_once` at a time (as many clients would), in order of results."""
    gate = asyncio.Semaphore(at_once)

    async def one(call: Any) -> Any:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))


class Expected:
    """What the report must say: each person's latest answer (option, channel)."""

    def __init__(self, everyone: list[str]) -> None:
        self.everyone = everyone
        self.answers: dict[str, tuple[str, str]] = {}
        self.help_open: set[str] = set()

    def answer(self, handle: str, option: str, channel: str) -> None:
        self.answers[handle] = (option, channel)
        if option == "2":
            self.help_open.add(handle)
        else:
            self.help_open.discard(handle)

    @property
    def unanswered(self) -> list[str]:
        return sorted(set(self.everyone) - set(self.answers))

    def counts(self, unreachable: int = 0) -> dict[str, Any]:
        return {
            "targeted": len(self.everyone),
            "notified": len(self.everyone),
            "unreachable": unreachable,
            "answered": len(self.answers),
            "accounted_for": len(self.answers),
            "suspect": 0,
            "late": 0,
            "by_option": {o["key"]: 0 for o in OPTIONS}
            | dict(Counter(o for o, _ in self.answers.values())),
            "by_channel": dict(Counter(c for _, c in self.answers.values())),
            "sms_opted_out": 0,
        }


async def check_report(
    s: Stack, live: Live, rc: str, boss: str, want: Expected, unreachable: int = 0
) -> dict[str, Any]:
    """The report, the live one and the unanswered list are what `want` says."""
    report: dict[str, Any] = await s.ok("GET", f"/v1/rollcalls/{rc}", token=boss)
    assert report["state"] == "open"
    assert report["counts"] == want.counts(unreachable)
    assert report["help_open"] == len(want.help_open)
    await live.shows(report)
    rows = await recipients(s, rc, boss, "unanswered")
    assert [r["handle"] for r in rows] == want.unanswered
    assert all(r["manager"] == manager_of(r["handle"]) for r in rows)
    assert all(r["state"] == "notified" and r["option"] is None for r in rows)
    return report


async def recipients(s: Stack, rc: str, boss: str, status: str | None = None) -> list[Any]:
    """Every row of `recipients`, page by page (pages of 100, to walk the cursor)."""
    found: list[Any] = []
    while True:
        params: dict[str, Any] = {"limit": 100}
        if status:
            params["status"] = status
        if found:
            params["after"] = found[-1]["handle"]
        page = await s.ok("GET", f"/v1/rollcalls/{rc}/recipients", token=boss, params=params)
        found += page
        if len(page) < 100:
            return found


async def mail_replies(port: int, messages: list[tuple[bytes, str, str]]) -> None:
    """One SMTP session to the mail-in listener delivering every (data, rcpt, sender); each
    must be taken (250), which the listener answers once it is handled on the record."""

    def talk() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            for data, rcpt, sender in messages:
                refused: Any = client.sendmail(sender, [rcpt], data)
                assert not refused, refused

    await asyncio.to_thread(talk)


async def test_a_roll_call_to_300_people_answered_everywhere_and_escalated(
    stack: Stack,
    peers: Peers,
    mail_port: int,
    live: Live,
    e2e_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = stack
    started = time.monotonic()
    # --- the people: a team, 300 members enrolled in it, four managers ------------------------
    boss = (await s.account("boss"))["token"]
    await s.account("ops", "team")
    await s.ok("PUT", "/v1/accounts/ops/posters/boss", 204, token=ADMIN_TOKEN)
    for manager in MANAGERS:
        await s.account(manager, email=f"{manager}@example.test")
    contacts: dict[str, dict[str, str]] = {}
    for h in handles(APP):
        contacts[h] = {}
    for h in handles(EMAIL):
        contacts[h] = {"email": f"{h}@example.test"}
    for h in handles(SMS):
        contacts[h] = {"phone": phone_of(h)}
    for h in handles(HOOK):
        contacts[h] = {"webhook_url": peers.hook(h)}
    created = await gathered([s.account(h, **c) for h, c in contacts.items()])
    people = {a["handle"]: a for a in created}
    everyone = sorted(people)
    assert len(everyone) == 300
    await gathered(
        [
            s.ok("PATCH", f"/v1/accounts/{h}", token=ADMIN_TOKEN, json={"manager": manager_of(h)})
            for h in everyone
        ]
    )
    await s.ok(
        "PUT",
        "/v1/accounts/ops/enrolments",
        202,
        token=ADMIN_TOKEN,
        json={"followers": everyone, "channels": ["app", "email", "sms", "webhook"]},
    )
    await s.ok(
        "PUT",
        "/v1/escalation-policies/evacuation",
        token=ADMIN_TOKEN,
        json={
            "steps": [
                {"after_s": STEP_1_S, "to": "recipient", "channels": "chosen"},
                {"after_s": STEP_2_S, "to": "manager", "channels": ["email"]},
            ]
        },
    )
    await s.routed()
    set_up = time.monotonic()

    # --- the roll-call goes out: to everyone in the app, and by email, SMS and webhook -------
    deadline = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    post = await s.post(
        boss,
        "Fire alarm in building A: are you safe?",
        as_="ops",
        rollcall={"options": OPTIONS, "deadline": deadline, "policy": "evacuation"},
    )
    rc: str = post["id"]
    opened = datetime.fromisoformat(post["created_at"].replace("Z", "+00:00"))
    await s.delivered(WAIT_S)
    want = Expected(everyone)
    live.watch(rc, boss)
    await check_report(s, live, rc, boss, want)

    totals = (await s.deliveries(rc, boss))["totals"]
    assert {c: (t["sent"], t["pending"] + t["failed"]) for c, t in totals.items()} == {
        "email": (COUNTS[EMAIL], 0),
        "sms": (COUNTS[SMS], 0),
        "webhook": (COUNTS[HOOK], 0),
    }
    assert len(peers.smtp.mails) == COUNTS[EMAIL]
    mails = {m.recipients[0]: m.message for m in peers.smtp.mails}
    assert set(mails) == {f"{h}@example.test" for h in handles(EMAIL)}
    texts = {m.to: m.body for m in peers.sms.messages}
    assert set(texts) == {phone_of(h) for h in handles(SMS)}
    assert all("Reply 1 I'm safe, 2 I need help, 3 Not on site" in t for t in texts.values())
    hooks = {r.path.rsplit("/", 1)[1]: r for r in peers.webhooks.accepted()}
    assert set(hooks) == set(handles(HOOK))
    assert not any(h.startswith(APP) for h in hooks)

    # --- app: 25 answer through the API, one of them asking for help ----------------------------
    app_people = handles(APP)[:APP_ANSWERS]
    helper = app_people[0]
    answers = []
    for i, h in enumerate(app_people):
        option = "2" if h == helper else option_for(i)
        body = {"option": option, "note": "stuck on floor 3"} if h == helper else {"option": option}
        answers.append((h, option, body))
    await gathered(
        [
            s.ok("POST", f"/v1/rollcalls/{rc}/responses", token=people[h]["token"], json=body)
            for h, _, body in answers
        ]
    )
    for h, option, _ in answers:
        want.answer(h, option, "app")
    report = await check_report(s, live, rc, boss, want)
    assert report["help_open"] == 1
    (helping,) = await recipients(s, rc, boss, "help_open")
    assert (helping["handle"], helping["note"]) == (helper, "stuck on floor 3")
    # the stream said so at once, before the report that counts it
    kinds = [(k, d.get("handle"), d.get("help_open")) for k, d in live.events]
    told_help = kinds.index(("help", helper, None))
    assert ("report", None, 1) not in kinds[:told_help]
    (help_event,) = [d for k, d in live.events if k == "help"]
    assert (help_event["option"], help_event["note"]) == ("2", "stuck on floor 3")

    # --- email: 20 press a button on the page the link in their email opens --------------------
    human(monkeypatch)  # a person reads before pressing; the test does not wait the 10 s

    async def by_link(i: int, h: str) -> None:
        plain = mails[f"{h}@example.test"].get_body(("plain",))
        assert plain is not None
        found = LINK.search(plain.get_content())
        assert found is not None, f"no answer link in {h}'s email"
        page = await s.call("GET", f"/r/{found.group(1)}", headers={"User-Agent": BROWSER})
        assert page.status_code == 200
        (form,) = [f for f in parse(page.text).forms if f["fields"]["option"] == option_for(i)]
        pressed = await s.call(
            "POST",
            form["action"],
            content=urlencode(form["fields"]),
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": BROWSER},
        )
        assert pressed.status_code == 200
        assert "your answer is recorded" in pressed.text

    by_link_people = handles(EMAIL)[:LINK_ANSWERS]
    await gathered([by_link(i, h) for i, h in enumerate(by_link_people)])
    for i, h in enumerate(by_link_people):
        want.answer(h, option_for(i), "email")
    await check_report(s, live, rc, boss, want)

    # --- email: 20 reply to it through `muster mail-in`, the first line naming the option ------
    by_mail_people = handles(EMAIL)[LINK_ANSWERS : LINK_ANSWERS + MAIL_ANSWERS]
    replies = []
    for i, h in enumerate(by_mail_people):
        label = OPTIONS[int(option_for(i)) - 1]["label"] if i % 2 else option_for(i)
        data, rcpt = reply(mails[f"{h}@example.test"], f"{h}@example.test", f"{label}\nAt home")
        replies.append((data, rcpt, f"{h}@example.test"))
    await mail_replies(mail_port, replies)
    for i, h in enumerate(by_mail_people):
        want.answer(h, option_for(i), "email")
    await check_report(s, live, rc, boss, want)
    assert await logged(s.redis, events.InboundEmailRefused, PARTITIONS) == []

    # --- SMS: 25 text their code back (signed as Twilio signs) ---------------------------------
    sms_people = handles(SMS)[:SMS_ANSWERS]
    texted = await gathered(
        [text_in(s, phone_of(h), option_for(i), f"SM{i:032x}") for i, h in enumerate(sms_people)]
    )
    assert all(r.status_code == 200 and "Recorded" in r.text for r in texted)
    for i, h in enumerate(sms_people):
        want.answer(h, option_for(i), "sms")
    await check_report(s, live, rc, boss, want)

    # --- webhooks: 25 receivers call back their respond_url, signed with their secret ---------
    async def callback(i: int, h: str) -> None:
        secret = people[h]["webhook_secret"]
        payload = Webhook(secret).verify(hooks[h].body, hooks[h].headers)
        path = payload["respond_url"].removeprefix(s.settings.public_url)
        body = msgspec.json.encode({"option": option_for(i)})
        answered = await s.call("POST", path, content=body, headers=signed(secret, f"cb_{h}", body))
        assert answered.status_code == 200, answered.text
        assert answered.json()["channel"] == "webhook"

    hook_people = handles(HOOK)[:HOOK_ANSWERS]
    await gathered([callback(i, h) for i, h in enumerate(hook_people)])
    for i, h in enumerate(hook_people):
        want.answer(h, option_for(i), "webhook")
    await check_report(s, live, rc, boss, want)

    # --- the help answer is handled: still answered, no longer open -----------------------------
    await s.ok("POST", f"/v1/rollcalls/{rc}/help/{helper}/handled", token=boss, json={})
    want.help_open.clear()
    await check_report(s, live, rc, boss, want)
    assert await recipients(s, rc, boss, "help_open") == []
    answered_at = time.monotonic()
    assert len(want.unanswered) == 300 - 115
    assert await told(s.redis, rc) == []  # nothing escalates without the escalation worker

    # --- step 1: the unanswered are reminded, on the channels they chose -----------------------
    unanswered = set(want.unanswered)
    app_only = {h for h in unanswered if h.startswith(APP)}
    sent_before = (len(peers.smtp.mails), len(peers.sms.messages), len(peers.webhooks.accepted()))
    async with escalation_worker(e2e_settings):

        async def fired(round_: str) -> bool:
            return any(r == round_ for r, _, _ in await told(s.redis, rc))

        await until(lambda: fired("s0l0"), "step 1")
        await s.delivered(WAIT_S)
        reminded = reminders(peers, rc)
        assert reminded == {
            (h, c)
            for h in unanswered
            for c, prefix in (("email", EMAIL), ("sms", SMS), ("webhook", HOOK))
            if h.startswith(prefix)
        }

        # --- between the steps, two people answer their reminders: a reply to the email
        # (its Reply-To names the roll-call), the code texted back (the reminder has them)
        late_mail = min(h for h in unanswered if h.startswith(EMAIL))
        late_sms = min(h for h in unanswered if h.startswith(SMS))
        address = f"{late_mail}@example.test"
        (reminder,) = [
            m.message
            for m in peers.smtp.mails
            if m.recipients == [address] and f"<{rc}-s0l0." in str(m.message["Message-ID"])
        ]
        data, rcpt = reply(reminder, address, "I'm safe\nWas in the car park")
        assert not await fired("s1l0"), "step 2 fired before the test could answer step 1"
        await mail_replies(mail_port, [(data, rcpt, address)])
        (texted_reminder,) = [
            m.body
            for m in peers.sms.messages
            if m.to == phone_of(late_sms) and m.idempotency_key == f"{rc}-s0l0.{late_sms}.sms"
        ]
        assert "Reply 1 I'm safe" in texted_reminder
        late = await text_in(s, phone_of(late_sms), "1", "SM" + "f" * 32)
        assert "Recorded" in late.text
        want.answer(late_mail, "1", "email")
        want.answer(late_sms, "1", "sms")
        assert not await fired("s1l0"), "step 2 fired before the test could answer step 1"

        step_1 = [
            (subject, target) for r, subject, target in await told(s.redis, rc) if r == "s0l0"
        ]
        assert sorted(step_1) == sorted((h, h) for h in unanswered)  # each once, only them
        # the app-only people had no channel to be reminded on: unreachable
        await check_report(s, live, rc, boss, want, unreachable=len(app_only))
        rows = {r["handle"]: r for r in await recipients(s, rc, boss)}
        assert {h for h, r in rows.items() if r["escalation_level"] >= 1} == unanswered
        unanswered_at_2 = set(want.unanswered)
        assert unanswered_at_2 == unanswered - {late_mail, late_sms}

        # --- step 2: each unanswered person's manager is told, once; nobody about the rest ----
        await until(lambda: fired("s1l0"), "step 2")
        await until(lambda: rounds_done(s.redis, PARTITIONS), "every round handled")
        await s.delivered(WAIT_S)
    step_2 = [(subject, target) for r, subject, target in await told(s.redis, rc) if r == "s1l0"]
    assert sorted(step_2) == sorted((h, manager_of(h)) for h in unanswered_at_2)
    notices = Counter(
        (m.recipients[0], str(m.message["Message-ID"]))
        for m in peers.smtp.mails
        if m.recipients[0].startswith("mgr_")
    )
    assert notices == Counter(
        {
            (
                f"{manager_of(h)}@example.test",
                f"<{rc}-s1l0-{h}.{manager_of(h)}.email@muster.test>",
            ): 1
            for h in unanswered_at_2
        }
    )
    for manager in MANAGERS:
        about = [m for m in peers.smtp.mails if m.recipients == [f"{manager}@example.test"]]
        assert len(about) == len([h for h in unanswered_at_2 if manager_of(h) == manager])
    # the people reminded got nothing more; the answered nothing at all since their post
    assert len(peers.sms.messages) == sent_before[1] + len(
        [h for h in unanswered if h.startswith(SMS)]
    )
    assert len(peers.webhooks.accepted()) == sent_before[2] + len(
        [h for h in unanswered if h.startswith(HOOK)]
    )
    await check_report(s, live, rc, boss, want, unreachable=len(app_only))
    rows = {r["handle"]: r for r in await recipients(s, rc, boss)}
    assert {h: r["escalation_level"] for h, r in rows.items()} == {
        h: 2 if h in unanswered_at_2 else 1 if h in unanswered else 0 for h in everyone
    }
    # on schedule: neither step before its time, step 2 after step 1
    fired_at = {e.round: e.at for e in await logged(s.redis, events.RollCallEscalated, PARTITIONS)}
    assert fired_at["s0l0"] >= opened + timedelta(seconds=STEP_1_S)
    assert fired_at["s1l0"] >= opened + timedelta(seconds=STEP_2_S)
    # the worker was running well before step 2 was due (checked above): it fired on time
    assert fired_at["s1l0"] < opened + timedelta(seconds=STEP_2_S + LATE_S)

    # --- a remind: at once, again to those not accounted for; no step counted for it ---------
    async with escalation_worker(e2e_settings):  # a worker started again finds the rounds done
        reminding = await s.ok("POST", f"/v1/rollcalls/{rc}/remind", 202, token=boss)
        assert reminding["counts"] == want.counts(len(app_only))
        (reminded_event,) = await logged(s.redis, events.RollCallReminded, PARTITIONS)
        tag = f"r{reminded_event.id}"

        async def remind_fired() -> bool:
            return any(r == tag for r, _, _ in await told(s.redis, rc))

        await until(remind_fired, "the remind")
        await until(lambda: rounds_done(s.redis, PARTITIONS), "every round handled")
        await s.delivered(WAIT_S)
    by_remind = [(subject, target) for r, subject, target in await told(s.redis, rc) if r == tag]
    assert sorted(by_remind) == sorted((h, h) for h in unanswered_at_2)
    assert reminders(peers, rc, tag) == {
        (h, c)
        for h in unanswered_at_2
        for c, prefix in (("email", EMAIL), ("sms", SMS), ("webhook", HOOK))
        if h.startswith(prefix)
    }
    assert {r for r, _, _ in await told(s.redis, rc)} == {"s0l0", "s1l0", tag}
    await check_report(s, live, rc, boss, want, unreachable=len(app_only))
    rows = {r["handle"]: r for r in await recipients(s, rc, boss)}
    assert {h: r["escalation_level"] for h, r in rows.items()} == {
        h: 2 if h in unanswered_at_2 else 1 if h in unanswered else 0 for h in everyone
    }

    # --- the same by manager, and in the export ------------------------------------------------
    groups = await s.ok("GET", f"/v1/rollcalls/{rc}/groups", token=boss, params={"by": "manager"})
    assert sorted(groups, key=lambda g: g["group"]) == [
        by_manager(want, manager) for manager in MANAGERS
    ]
    export = await s.call("GET", f"/v1/rollcalls/{rc}/export", token=boss)
    assert export.status_code == 200
    table = list(csv.DictReader(io.StringIO(export.text)))
    assert {r["handle"]: (r["option"], r["channel"]) for r in table if r["option"]} == want.answers
    assert sorted(r["handle"] for r in table if r["state"] == "notified") == want.unanswered
    assert len(table) == len(everyone)
    assert not await s.dead()
    print(  # the figures, with -s
        f"set-up {set_up - started:.1f}s, answers {answered_at - set_up:.1f}s, "
        f"total {time.monotonic() - started:.1f}s"
    )


def by_manager(want: Expected, manager: str) -> dict[str, Any]:
    """The group `manager` should be: their reports' counts (no help left open)."""
    reports = [h for h in want.everyone if manager_of(h) == manager]
    answered = [want.answers[h] for h in reports if h in want.answers]
    return {
        "group": manager,
        "asked": len(reports),
        "answered": len(answered),
        "accounted_for": len(answered),
        "unanswered": len(reports) - len(answered),
        "help_open": len([h for h in reports if h in want.help_open]),
        "by_option": {o["key"]: 0 for o in OPTIONS} | dict(Counter(o for o, _ in answered)),
    }


def reminders(peers: Peers, rc: str, round_: str = "s0l0") -> set[tuple[str, str]]:
    """(person, channel) of every reminder of `round_` that arrived, each exactly once."""
    prefix = f"{rc}-{round_}."
    found: Counter[tuple[str, str]] = Counter()
    for m in peers.smtp.mails:
        mid = str(m.message["Message-ID"]).strip("<>")
        if mid.startswith(prefix):
            found[(mid.removeprefix(prefix).split(".")[0], "email")] += 1
    for sms in peers.sms.messages:
        if (sms.idempotency_key or "").startswith(prefix):
            found[(str(sms.idempotency_key).removeprefix(prefix).split(".")[0], "sms")] += 1
    for hook in peers.webhooks.accepted():
        if hook.headers["webhook-id"].startswith(prefix):
            found[(hook.headers["webhook-id"].removeprefix(prefix).split(".")[0], "webhook")] += 1
    assert set(found.values()) <= {1}, found
    return set(found)
