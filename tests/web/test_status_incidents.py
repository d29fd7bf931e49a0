"""The status page that shows status, in a real browser: the overall state, open incidents
with their latest update, components with their 90-day bars, past incidents by day, an
incident's page, the page's look, at desktop and phone width (screenshots kept); internal
incidents never appear. (Caching: tests/api/test_status_cache.py.)
"""

from __future__ import annotations

from typing import Any

from web.conftest import ContextFactory, WebStack, needs_browser, shot

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import Page, expect  # noqa: E402


def status(web: WebStack) -> dict[str, Any]:
    """`ops` with three components, a resolved incident, an open major one, an internal
    critical one, a plain public post and a look."""
    pat = web.person("pat")
    web.team("ops", "pat", display_name="Ops at Example")
    for name, description in (("API", "REST and GraphQL"), ("Checkout", ""), ("Dashboard", "")):
        body = {"status": "operational", "description": description}
        web.ok("PUT", f"/v1/accounts/ops/components/{name}", token=pat, json=body)

    def open_(title: str, impact: str, visibility: str = "public", **more: Any) -> str:
        body = {"as": "ops", "title": title, "status": "investigating", "impact": impact,
                "text": f"We are looking into {title.lower()}.", "visibility": visibility, **more}  # fmt: skip
        found: str = web.ok("POST", "/v1/incidents", 201, token=pat, json=body)["id"]
        return found

    old = open_("Slow dashboard", "minor", components={"Dashboard": "degraded_performance"})
    web.ok(
        "POST",
        f"/v1/incidents/{old}/updates",
        202,
        token=pat,
        json={
            "status": "resolved",
            "text": "Dashboards are fast again.",
            "components": {"Dashboard": "operational"},
        },
    )
    current = open_("Checkout failing in EU", "major", components={"Checkout": "partial_outage"})
    web.ok(
        "POST",
        f"/v1/incidents/{current}/updates",
        202,
        token=pat,
        json={"status": "identified", "text": "A bad deploy; rolling back now."},
    )
    open_("INTERNAL pager storm", "critical", visibility="internal")
    web.post(pat, "Maintenance window on Sunday 02:00 UTC.", as_="ops", visibility="public")
    web.ok("PATCH", "/v1/accounts/ops", token=pat, json={"accent_color": "#6d28d9"})
    web.settle()
    return {"pat": pat, "current": current, "old": old}


def no_sideways_scroll(page: Page) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"


def test_the_page_shows_status_at_desktop_and_phone_width(
    web: WebStack, context: ContextFactory
) -> None:
    status(web)
    for width, height, name in ((1280, 900, "desktop"), (390, 844, "phone")):
        page = context(
            viewport={"width": width, "height": height}, java_script_enabled=False
        ).new_page()
        page.goto("/@ops")
        main = page.locator("main")
        overall = page.locator(".overall")
        expect(overall).to_have_attribute("data-indicator", "major")
        expect(overall).to_contain_text("Checkout failing in EU")
        expect(overall).to_contain_text("Partial System Outage")
        opened = page.locator(".open-incidents .incident")
        expect(opened).to_have_count(1)
        expect(opened).to_contain_text("Identified — A bad deploy; rolling back now.")
        expect(opened).to_contain_text("This affects Checkout")
        components = page.locator(".component")
        expect(components).to_have_count(3)
        expect(components.nth(0)).to_contain_text("API")
        expect(components.nth(0)).to_contain_text("REST and GraphQL")
        expect(components.nth(1)).to_contain_text("Partial outage")
        expect(components.nth(2).locator(".history li")).to_have_count(90)
        # today's bar of Dashboard shows the worst of the day, though it is fine now
        expect(components.nth(2).locator(".history li").last).to_have_attribute(
            "data-status", "degraded_performance"
        )
        expect(components.nth(2)).to_contain_text("Operational")
        past = page.locator(".past-day")
        expect(past).to_have_count(15)
        expect(past.first.locator(".incident")).to_contain_text("Slow dashboard")
        expect(past.first.locator(".incident")).to_contain_text(
            "Resolved — Dashboards are fast again."
        )
        expect(past.nth(1)).to_contain_text("No incidents reported.")
        expect(page.locator("#posts")).to_contain_text("Maintenance window on Sunday")
        expect(page.locator("#posts")).not_to_contain_text("bad deploy")  # incident updates
        expect(main).not_to_contain_text("INTERNAL")
        accent = page.evaluate(
            "getComputedStyle(document.documentElement).getPropertyValue('--accent')"
        )
        assert accent.strip() == "#6d28d9"
        no_sideways_scroll(page)
        shot(page, f"status-incidents-{name}")

        opened.get_by_role("link", name="Checkout failing in EU").click()
        updates = page.locator(".incident-updates li")
        expect(updates).to_have_count(2)
        expect(updates.first).to_contain_text(
            "Investigating — We are looking into checkout failing in eu."
        )
        expect(updates.last).to_contain_text("Identified — A bad deploy")
        no_sideways_scroll(page)
        shot(page, f"status-incident-{name}")


def test_internal_incident_pages_do_not_exist(web: WebStack) -> None:
    made = status(web)
    internal = web.ok("GET", "/v1/accounts/ops/incidents", token=made["pat"])[0]
    assert internal["visibility"] == "internal"
    assert web.call("GET", f"/@ops/incidents/{internal['id']}").status_code == 404
    assert web.call("GET", f"/@ops/incidents/{made['current']}").status_code == 200
