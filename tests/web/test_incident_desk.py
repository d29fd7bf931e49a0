"""Posting incidents from the web app (`/app/incidents/{handle}`) in a real browser: a poster
adds components, opens an incident that sets one, updates it, resolves it and reopens it;
followers get every update, the status page shows it; a non-poster is refused; forms without
the session's CSRF token change nothing; the desk lays out at desktop and phone width.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from web.conftest import ADMIN_TOKEN, ContextFactory, WebStack, needs_browser, shot, sign_in
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


def open_incidents(web: WebStack, token: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = web.ok(
        "GET", "/v1/accounts/ops/incidents?state=open", token=token
    )
    return found


def add_component(page: Page, name: str, state: str = "Operational") -> None:
    form = page.locator("form[aria-labelledby=new-component-title]")
    form.get_by_label("Name").fill(name)
    form.get_by_label("State").select_option(label=state)
    form.get_by_role("button", name="Add component").click()
    expect(page.locator("p.notice")).to_have_text("Component saved.")


def test_open_update_resolve_and_set_components_from_the_app(
    web: WebStack, context: ContextFactory
) -> None:
    tokens = cast(web)
    mia = context().new_page()
    sign_in(mia, tokens["mia"])

    mia.get_by_text("Make it an incident").click()  # from the home composer
    mia.get_by_role("link", name="the incident desk").click()
    expect(mia).to_have_url(re.compile(r"/app/incidents/ops$"))  # her only team
    add_component(mia, "API")
    add_component(mia, "Card payments")  # a name with a space survives the path
    names = [c["name"] for c in web.ok("GET", "/v1/accounts/ops/components")]
    assert names == ["API", "Card payments"]

    form = mia.locator("#open-incident")
    form.get_by_label("Title").fill("Checkout failing")
    form.get_by_label("Impact").select_option("major")
    form.get_by_label("What is happening").fill("Card payments fail for some customers.")
    form.get_by_label("Card payments").select_option("partial_outage")
    form.get_by_role("button", name="Open incident").click()
    expect(mia.locator("p.notice")).to_contain_text("Incident opened")

    (incident,) = open_incidents(web, tokens["mia"])
    assert (incident["title"], incident["status"], incident["impact"]) == (
        "Checkout failing",
        "investigating",
        "major",
    )
    assert incident["visibility"] == "public"
    assert incident["components"] == {"Card payments": "partial_outage"}
    card = mia.locator(f"#incident-{incident['id']}")
    expect(card).to_contain_text("Card payments fail for some customers.")

    card.get_by_label("Status").select_option("identified")
    card.get_by_label("Update", exact=True).fill("An expired certificate on the card gateway.")
    card.get_by_role("button", name=re.compile("^Post update")).click()
    expect(mia.locator("p.notice")).to_have_text("Update posted.")
    (incident,) = open_incidents(web, tokens["mia"])
    assert incident["status"] == "identified"
    assert incident["impact"] == "major"  # "as it is" kept it

    card = mia.locator(f"#incident-{incident['id']}")
    card.get_by_label("Update", exact=True).fill("Certificate renewed; payments work again.")
    card.get_by_label("Card payments").select_option("operational")
    card.get_by_role("button", name=re.compile("^Resolve")).click()
    expect(mia.locator("p.notice")).to_have_text("Incident resolved.")
    assert open_incidents(web, tokens["mia"]) == []
    resolved = web.ok("GET", f"/v1/incidents/{incident['id']}")
    assert resolved["status"] == "resolved"
    assert resolved["resolved_at"]
    assert [u["status"] for u in resolved["updates"]] == ["investigating", "identified", "resolved"]
    states = {c["name"]: c["status"] for c in web.ok("GET", "/v1/accounts/ops/components")}
    assert states == {"API": "operational", "Card payments": "operational"}

    # the component editor sets a state on its own
    row = mia.locator("ul.desk-components li", has_text="API")
    row.get_by_label("State of API").select_option("degraded_performance")
    row.get_by_role("button", name=re.compile("^Set")).click()
    expect(mia.locator("p.notice")).to_have_text("Component saved.")
    states = {c["name"]: c["status"] for c in web.ok("GET", "/v1/accounts/ops/components")}
    assert states["API"] == "degraded_performance"

    # a follower got every update in her timeline; the status page shows the past incident
    web.settle()
    home = web.ok("GET", "/v1/timelines/home", token=tokens["lena"])
    texts = " ".join(p["text"] for p in home)
    for said in ("Card payments fail", "expired certificate", "Certificate renewed"):
        assert said in texts
    status = context().new_page()
    status.goto("/@ops")
    expect(status.locator("body")).to_contain_text("Checkout failing")
    expect(status.locator("body")).to_contain_text("Degraded performance")

    # reopening a resolved one
    mia.locator(f"#incident-{incident['id']}").get_by_label("Why it is reopened").fill(
        "Errors are back."
    )
    mia.get_by_role("button", name=re.compile("^Reopen")).click()
    expect(mia.locator("p.notice")).to_have_text("Update posted.")
    (reopened,) = open_incidents(web, tokens["mia"])
    assert reopened["id"] == incident["id"]
    assert reopened["resolved_at"] is None


def test_refusals_are_shown_and_change_nothing(web: WebStack, context: ContextFactory) -> None:
    tokens = cast(web)
    lena_context = context()
    lena = lena_context.new_page()
    sign_in(lena, tokens["lena"])
    expect(lena.get_by_text("Make it an incident")).to_have_count(0)
    lena.goto("/app/incidents")
    expect(lena.locator("p.empty")).to_contain_text("You post as no team")
    answer = lena.goto("/app/incidents/ops")
    assert answer is not None
    assert answer.status == 403
    csrf = lena_context.request.get("/app/me").text()
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', csrf)
    assert token
    body: dict[str, str | float | bool] = {"csrf": token.group(1), "title": "Fake",
            "status": "investigating", "impact": "minor", "text": "Not mine to say."}  # fmt: skip
    refused = lena_context.request.post("/app/incidents/ops", form=body, max_redirects=0)
    assert refused.status == 403
    assert web.ok("GET", "/v1/accounts/ops/incidents") == []

    mia_context = context()
    mia = mia_context.new_page()
    sign_in(mia, tokens["mia"])
    mia.goto("/app/incidents/ops")
    form = mia.locator("#open-incident")
    form.get_by_label("Title").fill("x" * 200)
    form.get_by_label("What is happening").fill("   ")
    form.get_by_role("button", name="Open incident").click()
    expect(mia.get_by_role("alert")).to_be_visible()
    expect(form.get_by_label("Title")).to_have_value("x" * 200)  # kept for another try
    assert web.ok("GET", "/v1/accounts/ops/incidents") == []

    forged: dict[str, str | float | bool] = {"title": "Forged", "status": "investigating",
              "impact": "minor", "text": "no", "name": "API"}  # fmt: skip
    for fields in (forged, {**forged, "csrf": "0" * 64}):
        for target in ("/app/incidents/ops", "/app/incidents/ops/components"):
            refused = mia_context.request.post(target, form=fields, max_redirects=0)
            assert refused.status == 403, target
    assert web.ok("GET", "/v1/accounts/ops/incidents") == []
    assert web.ok("GET", "/v1/accounts/ops/components") == []


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_the_desk_at_desktop_and_phone_width(
    web: WebStack, context: ContextFactory, device: str
) -> None:
    tokens = cast(web)
    for name in ("API", "Card payments", "Dashboard"):
        web.ok("PUT", f"/v1/accounts/ops/components/{name}", token=ADMIN_TOKEN,
               json={"status": "operational"})  # fmt: skip
    web.ok("POST", "/v1/incidents", 201, token=tokens["mia"], json={
        "as": "ops", "title": "Checkout failing for some customers", "status": "identified",
        "impact": "critical", "text": "An expired certificate on the card gateway.",
        "components": {"Card payments": "major_outage"},
    })  # fmt: skip
    page = context(viewport=WIDTHS[device]).new_page()
    sign_in(page, tokens["mia"])
    page.goto("/app/incidents/ops")
    page.wait_for_load_state("load")
    shot(page, f"screen-incidents-{device}")
    assert page.evaluate(LAYOUT) == []
