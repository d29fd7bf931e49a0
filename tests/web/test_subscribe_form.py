"""The status page's subscription form in a real browser, with JavaScript off, at desktop and
phone width: subscribe by email and confirm with the link's button, subscribe by SMS and
type the code. The confirmation's token or code is read where the delivery worker would
read it (the request the api appended); screenshots go to tests/artifacts.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from web.conftest import ContextFactory, WebStack, needs_browser, shot

needs_browser()
from playwright.sync_api import expect  # noqa: E402

from muster import keys  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 900}},
    "phone": {
        "viewport": {"width": 360, "height": 740},
        "device_scale_factor": 2,
        "is_mobile": True,
    },
}


def secret_sent(web: WebStack, channel: str) -> str:
    entries: Any = web.redis.xrange(keys.deliveries(0, channel))
    secret = msgspec.json.decode(entries[-1][1][b"e"])["secret"]
    assert isinstance(secret, str)
    return secret


def subscriptions(web: WebStack) -> list[dict[str, Any]]:
    from web.conftest import ADMIN_TOKEN

    found: list[dict[str, Any]] = web.ok("GET", "/v1/accounts/ops/subscriptions", token=ADMIN_TOKEN)
    return found


@pytest.mark.parametrize("size", list(SIZES))
def test_subscribe_by_email_and_confirm_without_javascript(
    web: WebStack, context: ContextFactory, size: str
) -> None:
    web.team("ops", display_name="Ops at Example")
    page = context(java_script_enabled=False, **SIZES[size]).new_page()
    page.goto("/@ops")
    form = page.locator("section.subscribe")
    expect(form).to_contain_text("Get updates")
    shot(page, f"subscribe-form-{size}")
    page.get_by_label("Email address, phone number or webhook URL").fill("kim@example.test")
    form.get_by_role("button", name="Subscribe").click()
    expect(page.locator("h1")).to_have_text("Check your email")
    shot(page, f"subscribe-sent-{size}")
    (pending,) = subscriptions(web)
    assert pending["state"] == "pending"

    token = secret_sent(web, "email")
    page.goto(f"/subscriptions/confirm/{pending['id']}.{token}")
    expect(page.locator("h1")).to_have_text("Confirm your subscription")
    assert subscriptions(web)[0]["state"] == "pending"  # opening the link changes nothing
    page.get_by_role("button", name="Confirm the subscription").click()
    expect(page.locator("h1")).to_have_text("You are subscribed")
    shot(page, f"subscribe-confirmed-{size}")
    assert subscriptions(web)[0]["state"] == "active"


def test_subscribe_by_sms_and_type_the_code(web: WebStack, context: ContextFactory) -> None:
    web.team("ops", display_name="Ops at Example")
    page = context(java_script_enabled=False, **SIZES["phone"]).new_page()
    page.goto("/@ops")
    page.get_by_label("SMS").check()
    page.get_by_label("Email address, phone number or webhook URL").fill("+15551234567")
    page.locator("section.subscribe").get_by_role("button", name="Subscribe").click()
    expect(page.locator("h1")).to_have_text("Check your phone")
    page.get_by_label("Code").fill("not-it")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("h1")).to_have_text("Not accepted")  # 422: wrong code, nothing changed
    assert subscriptions(web)[0]["state"] == "pending"
    page.goto("/@ops")  # as the error page says: subscribe again for a new code
    page.get_by_label("SMS").check()
    page.get_by_label("Email address, phone number or webhook URL").fill("+15551234567")
    page.locator("section.subscribe").get_by_role("button", name="Subscribe").click()
    page.get_by_label("Code").fill(secret_sent(web, "sms"))
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("h1")).to_have_text("You are subscribed")
    shot(page, "subscribe-sms-confirmed-phone")
    assert subscriptions(web)[0]["state"] == "active"
