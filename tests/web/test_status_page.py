"""The public status page in a real browser: live updates, visibility, threads, paging, no JS,
a phone's screen, escaping, and the embeddable banner.

The page is read anonymously, as a visitor sent there during an incident would; internal posts
of the same account are made alongside public ones and must never show up, neither in the
server-rendered page nor over the live stream.
"""

from __future__ import annotations

import time

from web.conftest import ContextFactory, WebStack, needs_browser, shot

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import Dialog, Page, expect  # noqa: E402

LIVE_BUDGET_S = 1.0
LIVE_TRIES = 3
"""Posts timed against the budget: the browser, Playwright, the api and Redis share two cores
in CI, and one GC pause must not fail the suite; one of them must show within the budget
(benchmarks/live.py measures the latency under load)."""


def incident(web: WebStack) -> dict[str, str]:
    """`ops` (a team; pat posts for it), with one public and one internal post, projected."""
    pat = web.person("pat")
    web.team("ops", "pat", display_name="Ops at Example")
    web.post(pat, "All systems operational since Monday.", as_="ops", visibility="public")
    web.post(pat, "INTERNAL: db failover planned 14:00", as_="ops")
    web.settle()
    return {"pat": pat}


def open_live(page: Page, path: str) -> None:
    """Open a page and wait until its live stream is connected."""
    page.goto(path)
    expect(page.locator("body")).to_have_attribute("data-live", "connected")


def test_a_new_post_shows_within_a_second_without_reload(
    web: WebStack, context: ContextFactory
) -> None:
    tokens = incident(web)
    page = context().new_page()
    open_live(page, "/@ops")
    posts = page.locator("#posts")
    expect(posts).to_contain_text("All systems operational since Monday.")
    expect(posts).not_to_contain_text("INTERNAL")
    expect(page.locator("#live-state")).to_have_text("Live")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    took: list[float] = []
    while len(took) < LIVE_TRIES and (not took or min(took) >= LIVE_BUDGET_S):
        text = f"Checkout is failing for some customers; we are on it ({len(took) + 1})."
        started = time.monotonic()
        web.post(tokens["pat"], text, as_="ops", visibility="public", severity="critical")
        expect(posts.locator("li").first).to_contain_text(text, timeout=10_000)
        took.append(time.monotonic() - started)
    assert min(took) < LIVE_BUDGET_S, f"posts took {took} s to show"
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    newest = posts.locator("article").first
    expect(newest).to_have_attribute("data-severity", "critical")
    expect(newest.locator(".severity")).to_have_text("critical")

    # an internal post on the same account never reaches the page; the public one after it
    # does, so by then the internal one has been through the stream too
    web.post(tokens["pat"], "INTERNAL: rollback of release 42", as_="ops", severity="warning")
    web.post(tokens["pat"], "Fix is rolling out.", as_="ops", visibility="public")
    expect(posts.locator("li").first).to_contain_text("Fix is rolling out.")
    expect(posts).not_to_contain_text("INTERNAL")
    assert posts.locator("article").count() == 2 + len(took)
    shot(page, "status-page-live")

    # what the server renders after a reload is what arrived live, in the same order
    page.reload()
    expect(posts.locator("article")).to_have_count(2 + len(took))
    expect(posts.locator("li").first).to_contain_text("Fix is rolling out.")
    expect(posts).not_to_contain_text("INTERNAL")


def test_threads_expand_and_internal_replies_stay_hidden(
    web: WebStack, context: ContextFactory
) -> None:
    tokens = incident(web)
    eve = web.person("eve", "external")
    mia = web.person("mia")
    first = web.post(tokens["pat"], "Payments degraded.", as_="ops", visibility="public")
    web.settle()
    web.post(eve, "Our shop sees it too.", in_reply_to=first["id"])  # external: public
    web.post(mia, "INTERNAL: it is the card processor", in_reply_to=first["id"])
    web.settle()

    page = context(java_script_enabled=False).new_page()  # <details> needs no script
    page.goto("/@ops")
    replies = page.locator(f"#post-{first['id']} details.replies")
    expect(replies.locator("summary")).to_have_text("1 reply")
    expect(replies.get_by_text("Our shop sees it too.")).to_be_hidden()
    replies.locator("summary").click()
    expect(replies.get_by_text("Our shop sees it too.")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text("INTERNAL")
    shot(page, "status-page-thread-open")

    replies.get_by_role("link", name="Whole thread").click()
    expect(page.get_by_role("heading", name="Update and its thread")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Payments degraded.")
    expect(page.locator("main")).to_contain_text("Our shop sees it too.")
    expect(page.locator("main")).not_to_contain_text("INTERNAL")


def test_works_without_javascript_and_pages_back_with_before(
    web: WebStack, context: ContextFactory
) -> None:
    tokens = incident(web)
    for n in range(21):
        web.post(tokens["pat"], f"Update number {n}", as_="ops", visibility="public")
    web.settle()
    page = context(java_script_enabled=False).new_page()
    page.goto("/@ops")
    expect(page.locator("#live-state")).to_be_hidden()
    articles = page.locator("#posts article")
    expect(articles).to_have_count(20)
    expect(articles.first).to_contain_text("Update number 20")
    page.get_by_role("link", name="Older updates").click()
    assert "before=" in page.url
    expect(articles).to_have_count(2)
    expect(articles.first).to_contain_text("Update number 0")
    expect(articles.last).to_contain_text("All systems operational since Monday.")
    expect(page.get_by_role("link", name="Older updates")).to_have_count(0)
    expect(page.locator("main")).not_to_contain_text("INTERNAL")
    page.get_by_role("link", name="Back to the newest updates").click()
    expect(articles.first).to_contain_text("Update number 20")


def test_readable_on_a_phone(web: WebStack, context: ContextFactory) -> None:
    tokens = incident(web)
    web.post(
        tokens["pat"],
        "A long update with a long word: " + "x" * 120 + " so it has to wrap on a phone.",
        as_="ops",
        visibility="public",
        severity="warning",
    )
    web.settle()
    phone = context(viewport={"width": 360, "height": 740}, device_scale_factor=2, is_mobile=True)
    page = phone.new_page()
    open_live(page, "/@ops")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
    font = page.evaluate("getComputedStyle(document.querySelector('.post .text')).fontSize")
    assert float(font.removesuffix("px")) >= 16
    shot(page, "status-page-phone")


def test_text_is_escaped_server_side_and_live(web: WebStack, context: ContextFactory) -> None:
    tokens = incident(web)
    hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>&amp;'
    web.post(tokens["pat"], hostile, as_="ops", visibility="public")
    web.settle()
    page = context().new_page()
    dialogs: list[str] = []

    def dialog(opened: Dialog) -> None:
        dialogs.append(opened.message)
        opened.dismiss()

    page.on("dialog", dialog)
    open_live(page, "/@ops")
    first = page.locator("#posts .text").first
    expect(first).to_have_text(hostile)  # shown as text, literally
    web.post(tokens["pat"], hostile + " live", as_="ops", visibility="public")
    expect(page.locator("#posts .text").first).to_have_text(hostile + " live")
    assert page.evaluate("window.__pwned === undefined")
    assert page.locator("#posts img").count() == 0
    assert not dialogs


def test_security_headers_and_unknown_accounts(web: WebStack, context: ContextFactory) -> None:
    incident(web)
    page = context().new_page()
    response = page.goto("/@ops")
    assert response is not None
    assert response.status == 200
    headers = response.headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "same-origin"
    missing = page.goto("/@nobody_here")
    assert missing is not None
    assert missing.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()


def test_the_banner_can_be_framed_and_shows_the_worst_open_incident(
    web: WebStack, context: ContextFactory
) -> None:
    tokens = incident(web)
    page = context(viewport={"width": 700, "height": 200}).new_page()
    response = page.goto("/@ops/banner")
    assert response is not None
    assert "frame-ancestors *" in response.headers["content-security-policy"]
    assert "x-frame-options" not in response.headers
    banner = page.locator("#banner")
    expect(banner).to_have_attribute("data-impact", "none")  # all is well: nothing shown
    expect(banner.locator(".text, .impact, a")).to_have_count(0)

    def open_(title: str, impact: str, visibility: str = "public") -> str:
        body = {"as": "ops", "title": title, "status": "investigating", "impact": impact,
                "text": f"{title}: looking into it.", "visibility": visibility}  # fmt: skip
        found: str = web.ok("POST", "/v1/incidents", 201, token=tokens["pat"], json=body)["id"]
        return found

    minor = open_("Slow search", "minor")
    major = open_("Checkout failing in EU", "major")
    open_("INTERNAL pager storm", "critical", visibility="internal")
    page.reload()
    expect(banner).to_have_attribute("data-impact", "major")
    expect(banner).to_contain_text("Checkout failing in EU")
    expect(banner).to_contain_text("Investigating")
    expect(banner).not_to_contain_text("INTERNAL")
    shot(page, "status-banner", full_page=False)
    resolved = {"status": "resolved", "text": "Fixed."}
    web.ok("POST", f"/v1/incidents/{major}/updates", 202, token=tokens["pat"], json=resolved)
    page.reload()
    expect(banner).to_contain_text("Slow search")
    web.ok("POST", f"/v1/incidents/{minor}/updates", 202, token=tokens["pat"], json=resolved)
    page.reload()
    expect(banner).to_have_attribute("data-impact", "none")
