"""The home composer opens incidents and an incident's thread takes updates, in a real
browser: the composer shows the status and impact, the incident's thread says where it stands
and its reply form is an update (status, impact, resolve); a non-poster sees a plain reply;
a refused incident is shown with the form kept and nothing created; both lay out at desktop
and phone width.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from web.conftest import ContextFactory, WebStack, needs_browser, shot, sign_in
from web.test_screens import LAYOUT, WIDTHS

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import Page, expect  # noqa: E402


def cast(web: WebStack) -> dict[str, str]:
    """mia: poster of ops; lena: a member who follows ops but posts as nobody."""
    tokens = {"mia": web.person("mia", display_name="Mia Wong"), "lena": web.person("lena")}
    web.team("ops", "mia", display_name="Ops at Example")
    web.follow(tokens["lena"], "ops")
    web.settle()
    return tokens


def incidents(web: WebStack, state: str = "open") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = web.ok("GET", f"/v1/accounts/ops/incidents?state={state}")
    return found


def open_from_composer(page: Page, *, as_: str, title: str, text: str) -> None:
    page.goto("/app")
    composer = page.locator("form.composer")
    composer.get_by_text("Make it an incident").click()
    composer.get_by_label("Incident title").fill(title)
    composer.get_by_label("Status").select_option(label="Identified")
    composer.get_by_label("Impact").select_option(label="Major")
    composer.get_by_label("Text").fill(text)
    composer.get_by_label("Post as").select_option(value=as_)
    composer.get_by_label("Who can see it").select_option(value="public")  # members: internal
    composer.get_by_role("button", name="Post").click()


def test_open_update_and_resolve_from_the_composer(web: WebStack, context: ContextFactory) -> None:
    tokens = cast(web)
    mia = context().new_page()
    sign_in(mia, tokens["mia"])

    open_from_composer(mia, as_="ops", title="Checkout failing", text="Card payments fail.")
    expect(mia.locator("p.notice")).to_contain_text("Incident opened")
    (incident,) = incidents(web)
    assert (incident["title"], incident["status"], incident["impact"]) == (
        "Checkout failing",
        "identified",
        "major",
    )
    assert incident["visibility"] == "public"
    assert incident["updates"][0]["severity"] == "warning"  # major → warning
    expect(mia).to_have_url(re.compile(rf"/app/posts/{incident['id']}\?"))
    expect(mia.get_by_role("heading", level=1)).to_have_text("Checkout failing")
    now = mia.locator("main p.incident-now").first
    expect(now).to_contain_text("Major")
    expect(now).to_contain_text("Identified")

    update = mia.locator("form.incident-update")
    expect(update.get_by_role("heading")).to_have_text("Update the incident")
    expect(update.get_by_label("Status")).to_have_value("identified")  # where it stands
    update.get_by_label("Status").select_option(label="Monitoring")
    update.get_by_label("Update").fill("A fix is out; watching.")
    update.get_by_role("button", name="Post update").click()
    expect(mia.locator("p.notice")).to_have_text("Update posted.")
    (incident,) = incidents(web)
    assert incident["status"] == "monitoring"
    assert incident["impact"] == "major"  # "as it is" kept it
    assert [u["message"] for u in incident["updates"]][-1] == "A fix is out; watching."

    update = mia.locator("form.incident-update")
    update.get_by_label("Impact").select_option(label="Minor")
    update.get_by_label("Update").fill("All payments go through again.")
    update.get_by_role("button", name="Post and resolve").click()
    expect(mia.locator("p.notice")).to_have_text("Incident resolved.")
    assert incidents(web) == []
    (resolved,) = incidents(web, "resolved")
    assert resolved["impact"] == "minor"
    assert resolved["resolved_at"] is not None
    assert len(resolved["updates"]) == 3
    expect(mia.locator("form.incident-update button[name=resolve]")).to_have_count(0)

    # the follower got every update; on the thread she has a plain reply, no incident controls
    web.settle()
    home = web.ok("GET", "/v1/timelines/home", token=tokens["lena"])
    assert sum(1 for p in home if p["as_account"] == "ops") == 3
    lena = context().new_page()
    sign_in(lena, tokens["lena"])
    expect(lena.locator("details.as-incident")).to_have_count(0)
    lena.goto(f"/app/posts/{incident['id']}")
    expect(lena.locator("form.incident-update")).to_have_count(0)
    expect(lena.locator("#composer-title")).to_have_text("Reply")


def test_a_refused_incident_keeps_the_form_and_creates_nothing(
    web: WebStack, context: ContextFactory
) -> None:
    tokens = cast(web)
    mia = context().new_page()
    sign_in(mia, tokens["mia"])
    open_from_composer(mia, as_="mia", title="Mine", text="People cannot open incidents.")
    expect(mia.get_by_role("alert")).to_be_visible()
    composer = mia.locator("form.composer")
    expect(composer.locator("details.as-incident")).to_have_attribute("open", "")
    expect(composer.get_by_label("Incident title")).to_have_value("Mine")
    expect(composer.get_by_label("Text")).to_have_value("People cannot open incidents.")
    assert incidents(web) == []
    assert incidents(web, "resolved") == []
    assert web.ok("GET", "/v1/accounts/mia/posts") == []


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_composer_and_incident_thread_layout(
    web: WebStack, context: ContextFactory, device: str
) -> None:
    tokens = cast(web)
    page = context(viewport=WIDTHS[device]).new_page()
    sign_in(page, tokens["mia"])
    page.locator("form.composer").get_by_text("Make it an incident").click()
    assert page.evaluate(LAYOUT) == []
    shot(page, f"screen-composer-incident-{device}")
    open_from_composer(page, as_="ops", title="Checkout failing", text="Card payments fail.")
    expect(page.locator("form.incident-update")).to_be_visible()
    assert page.evaluate(LAYOUT) == []
    shot(page, f"screen-incident-thread-{device}")
