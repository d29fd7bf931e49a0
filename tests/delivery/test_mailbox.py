"""A fresh install's deliveries: no SMTP server, the SMS `log` provider.

Email goes to the development mailbox (`<data dir>/mailbox/<delivery id>.eml`, the message
exactly as it would have been sent) and the log; SMS to the log with its text; each delivery
is `logged` — NOT sent — in the delivery report, with a note saying where it went, and
never tried again. A DM's text and an internal post's never reach the log.
"""

from __future__ import annotations

import email
import email.policy
import stat
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog.testing

from delivery.conftest import OpenStack, Stack
from muster import keys
from muster.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def fresh_settings(delivery_settings: Settings, tmp_path: Path) -> Settings:
    """delivery_settings as a fresh install has them: no SMTP, no MUSTER_MAIL_FROM, SMS `log`."""
    return msgspec.structs.replace(
        delivery_settings,
        smtp_url=None,
        mail_from=None,
        sms_provider="log",
        data_dir=tmp_path / "var",
    )


@pytest.fixture
async def fresh(fresh_settings: Settings, open_stack: OpenStack) -> AsyncIterator[Stack]:
    async with open_stack(fresh_settings) as opened:
        yield opened


def logged_events(captured: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in captured if "not sent" in str(e.get("event", ""))]


async def test_a_post_goes_to_the_mailbox_and_the_log_and_shows_as_not_sent(
    fresh: Stack, fresh_settings: Settings
) -> None:
    s = fresh
    pat = (await s.account("pat"))["token"]
    mia = (await s.account("mia", email="mia@example.test", phone="+15551230001"))["token"]
    await s.account("ops", "team")
    await s.ok("PUT", "/v1/accounts/ops/posters/pat", 204, token=s.admin_token)
    await s.follow(mia, "ops", "email", "sms")
    await s.routed()
    with structlog.testing.capture_logs() as captured:
        post = await s.post(
            pat, "db failover at 14:00", as_="ops", severity="warning", visibility="public"
        )
        await s.delivered()

    mailbox = fresh_settings.data_dir / "mailbox"
    path = mailbox / f"{post['id']}.mia.email.eml"
    assert sorted(p.name for p in mailbox.iterdir()) == [path.name]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(mailbox.stat().st_mode) == 0o700
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.SMTP)
    assert message["To"] == "mia@example.test"
    assert message["From"] == "muster@localhost"
    assert message["Message-ID"] == f"<{post['id']}.mia.email@muster.test>"
    assert message["Subject"] == "[WARNING] @ops (by @pat): db failover at 14:00"
    plain = message.get_body(("plain",))
    assert plain is not None
    assert "db failover at 14:00" in plain.get_content()

    report = await s.deliveries(post["id"])
    assert report["totals"]["email"] == {"pending": 0, "sent": 0, "logged": 1, "failed": 0}
    assert report["totals"]["sms"] == {"pending": 0, "sent": 0, "logged": 1, "failed": 0}
    rows = {r["channel"]: r for r in report["recipients"]}
    assert rows["email"]["status"] == "logged"
    assert "last_error" not in rows["email"]
    assert rows["email"]["note"] == f"not sent (MUSTER_SMTP_URL is unset): written to {path}"
    assert rows["sms"]["note"].startswith("not sent (MUSTER_SMS_PROVIDER=log)")
    only = await s.deliveries(post["id"], status="logged")
    assert len(only["recipients"]) == 2

    (mail_line,) = [e for e in logged_events(captured) if "email" in e["event"]]
    assert mail_line["to"] == "mia@example.test"
    assert mail_line["subject"] == "[WARNING] @ops (by @pat): db failover at 14:00"
    assert mail_line["file"] == str(path)
    (sms_line,) = [e for e in logged_events(captured) if "sms" in e["event"]]
    assert sms_line["to"] == "+15551230001"
    assert sms_line["text"].startswith("[WARNING] @ops: db failover at 14:00")
    assert not await s.dead()

    # Done is done: handling the requests again (a reclaim, a replay) writes nothing new.
    path.unlink()
    for channel in ("email", "sms"):
        await s.redis.xgroup_setid(keys.deliveries(0, channel), "delivery", id="0")
    await s.delivered()
    assert not path.exists()


async def test_a_dm_is_in_the_mailbox_but_its_text_never_in_the_log(
    fresh: Stack, fresh_settings: Settings
) -> None:
    s = fresh
    mia = (await s.account("mia"))["token"]
    tom = await s.account("tom", email="tom@example.test", phone="+15551230009")
    await s.ok("PATCH", "/v1/me", token=tom["token"], json={"dm_channels": ["email", "sms"]})
    await s.routed()
    secret = "the door code is 4471"
    with structlog.testing.capture_logs() as captured:
        sent = await s.dm(mia, "tom", secret)
        await s.delivered()

    path = fresh_settings.data_dir / "mailbox" / f"{sent['id']}.tom.email.eml"
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.SMTP)
    assert message["Subject"] == "Direct message from @mia"
    plain = message.get_body(("plain",))
    assert plain is not None
    assert secret in plain.get_content()  # the file is the email tom would have received

    lines = logged_events(captured)
    assert {e["event"] for e in lines} == {
        "email not sent: DM written to the mailbox",
        "sms not sent (log provider): private, text withheld",
    }
    assert not any(secret in repr(e) for e in captured)


async def test_an_internal_post_keeps_its_text_out_of_the_log(fresh: Stack) -> None:
    s = fresh
    mia = (await s.account("mia", email="mia@example.test", phone="+15551230001"))["token"]
    await s.account("ops", "team")
    await s.ok("PUT", "/v1/accounts/ops/posters/admin", 204, token=s.admin_token)
    await s.follow(mia, "ops", "email", "sms")
    await s.routed()
    with structlog.testing.capture_logs() as captured:
        await s.post(s.admin_token, "payroll runs late", as_="ops", visibility="internal")
        await s.delivered()
    assert len(logged_events(captured)) == 2
    assert not any("payroll" in repr(e) for e in captured)
