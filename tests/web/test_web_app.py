"""The follower's web app in a real browser: sign in, post (as yourself and as a team), reply,
DMs both ways, live updates, follows and contact points, delivery reports, and what each
viewer sees: a member, an external follower and an anonymous visitor.
"""

from __future__ import annotations

import re

from web.conftest import ADMIN_TOKEN, ContextFactory, WebStack, needs_browser, shot, sign_in

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import BrowserContext, Page, expect  # noqa: E402


def cast(web: WebStack) -> dict[str, str]:
    """mia (member, poster of ops), pat (member, poster of ops), eve (external); every member
    follows ops (a mandatory enrolment), eve follows it herself."""
    tokens = {
        "mia": web.person("mia"),
        "pat": web.person("pat"),
        "eve": web.person("eve", "external"),
    }
    web.team("ops", "mia", "pat", display_name="Ops")
    web.ok(
        "PUT",
        "/v1/accounts/ops/enrolments",
        202,
        token=ADMIN_TOKEN,
        json={"followers": "all_members", "channels": ["app"], "mandatory": True},
    )
    web.follow(tokens["eve"], "ops")
    web.settle()
    return tokens


def signed_in(context: ContextFactory, token: str) -> Page:
    page = context().new_page()
    sign_in(page, token)
    return page


def compose(page: Page, text: str, *, as_: str | None = None, visibility: str | None = None,
            severity: str | None = None) -> None:  # fmt: skip
    form = page.locator("form.composer")
    form.get_by_label("Text").fill(text)
    if as_ is not None:
        form.get_by_label("Post as").select_option(as_)
    if visibility is not None:
        form.get_by_label("Who can see it").select_option(visibility)
    if severity is not None:
        form.get_by_label("Severity").select_option(severity)
    form.get_by_role("button").click()


def test_sign_in_post_reply_dm_and_each_viewer_sees_what_they_may(
    web: WebStack, context: ContextFactory
) -> None:
    tokens = cast(web)

    # --- mia signs in and posts, as herself and as ops ---------------------------------------
    mia = context().new_page()
    mia.goto("/app")
    expect(mia).to_have_url(re.compile(r"/app/signin\?next="))
    shot(mia, "app-signin")
    mia.get_by_label("Your token").fill(tokens["mia"])
    mia.get_by_role("button", name="Sign in").click()
    expect(mia).to_have_url(re.compile(r"/app$"))
    expect(mia.get_by_role("heading", name="Home")).to_be_visible()

    compose(mia, "Mia: internal heads-up, VPN flaky")
    expect(mia.locator("p.notice")).to_have_text("Posted.")
    first = mia.locator("#posts article").first
    expect(first).to_contain_text("Mia: internal heads-up, VPN flaky")
    expect(first.locator(".visibility")).to_have_text("internal")

    compose(mia, "Ops: login errors, investigating", as_="ops", visibility="public",
            severity="warning")  # fmt: skip
    first = mia.locator("#posts article").first
    expect(first).to_contain_text("Ops: login errors, investigating")
    expect(first).to_have_attribute("data-severity", "warning")
    expect(first.locator(".account")).to_have_text("@ops")
    expect(first.locator(".by")).to_have_text("by @mia")
    ops_public_id = (first.get_attribute("id") or "").removeprefix("post-")

    internal = web.post(tokens["pat"], "Ops: INTERNAL root cause is the LDAP cert", as_="ops")
    web.settle()
    mia.reload()
    expect(mia.locator("#posts")).to_contain_text("INTERNAL root cause")
    shot(mia, "app-home")

    # --- a reply in the thread ------------------------------------------------------------------
    mia.locator(f"#post-{ops_public_id}").get_by_role("link", name="Reply").click()
    expect(mia.get_by_role("heading", name="Thread")).to_be_visible()
    compose(mia, "Update: fix deployed to half the fleet", as_="ops", visibility="public")
    expect(mia.locator("p.notice")).to_have_text("Posted.")
    expect(mia.locator("#replies")).to_contain_text("Update: fix deployed to half the fleet")
    shot(mia, "app-thread")

    # --- a DM to eve -----------------------------------------------------------------------------
    mia.get_by_role("navigation", name="Main").get_by_role("link", name="Messages").click()
    mia.get_by_label("To (handle)").fill("eve")
    mia.get_by_label("Message", exact=True).fill("Hi Eve, can you send us a trace id?")
    mia.get_by_role("button", name="Send").click()
    expect(mia).to_have_url(re.compile(r"/app/dms/eve"))
    expect(mia.locator("#messages")).to_contain_text("Hi Eve, can you send us a trace id?")
    expect(mia.locator("body")).to_have_attribute("data-live", "connected")

    # --- eve, an external follower of ops ----------------------------------------------------------
    eve = signed_in(context, tokens["eve"])
    timeline = eve.locator("#posts")
    expect(timeline).to_contain_text("Ops: login errors, investigating")
    expect(timeline).to_contain_text("Update: fix deployed to half the fleet")
    expect(timeline).not_to_contain_text("INTERNAL")
    expect(timeline).not_to_contain_text("Mia: internal heads-up")
    expect(eve.get_by_label("Who can see it").locator("option")).to_have_count(1)  # public only
    response = eve.goto(f"/app/posts/{internal['id']}")
    assert response is not None
    assert response.status == 404
    expect(eve.locator("main")).not_to_contain_text("LDAP")

    eve.goto("/app/dms")
    eve.get_by_role("link", name="@mia").click()
    expect(eve.locator("#messages")).to_contain_text("Hi Eve, can you send us a trace id?")
    eve.get_by_label("Message", exact=True).fill("Sure: trace 4f2a-99")
    eve.get_by_role("button", name="Send").click()
    expect(eve.locator("#messages")).to_contain_text("Sure: trace 4f2a-99")
    # mia's open conversation shows eve's answer without a reload
    expect(mia.locator("#messages")).to_contain_text("Sure: trace 4f2a-99")
    shot(mia, "app-conversation")

    # --- an anonymous visitor of the status page -----------------------------------------------------
    anonymous = context().new_page()
    anonymous.goto("/@ops")
    posts = anonymous.locator("#posts")
    expect(posts).to_contain_text("Ops: login errors, investigating")
    expect(posts).not_to_contain_text("INTERNAL")
    expect(posts).not_to_contain_text("Mia: internal heads-up")
    response = anonymous.goto(f"/@ops/posts/{internal['id']}")
    assert response is not None
    assert response.status == 404
    response = anonymous.goto("/app")  # the app is for people with a token
    expect(anonymous).to_have_url(re.compile(r"/app/signin"))


def test_home_timelines_update_live_for_each_viewer(web: WebStack, context: ContextFactory) -> None:
    tokens = cast(web)
    mia = signed_in(context, tokens["mia"])
    eve = signed_in(context, tokens["eve"])
    for page in (mia, eve):
        expect(page.locator("body")).to_have_attribute("data-live", "connected")
        page.evaluate("window.__sameDocument = true")
    web.post(tokens["pat"], "Ops: INTERNAL failover at 14:00", as_="ops", severity="critical")
    web.post(tokens["pat"], "Ops: short maintenance at 14:00", as_="ops", visibility="public")
    expect(mia.locator("#posts li").first).to_contain_text("Ops: short maintenance at 14:00")
    expect(mia.locator("#posts")).to_contain_text("Ops: INTERNAL failover at 14:00")
    expect(eve.locator("#posts li").first).to_contain_text("Ops: short maintenance at 14:00")
    expect(eve.locator("#posts")).not_to_contain_text("INTERNAL")
    critical = mia.locator("#posts article", has_text="INTERNAL failover")
    expect(critical).to_have_attribute("data-severity", "critical")
    expect(critical.locator(".visibility")).to_have_text("internal")
    for page in (mia, eve):
        assert page.evaluate("window.__sameDocument === true"), "the page reloaded"
    # a DM to someone on another page marks Messages in the navigation
    web.dm(tokens["pat"], "mia", "ping")
    expect(
        mia.get_by_role("navigation", name="Main").get_by_role("link", name="Messages (new)")
    ).to_be_visible()


def test_follows_channels_and_contact_points(web: WebStack, context: ContextFactory) -> None:
    tokens = cast(web)
    web.team("status", display_name="Public status")
    mia = signed_in(context, tokens["mia"])

    mia.get_by_role("link", name="Contact points").click()
    mia.get_by_role("textbox", name="Email").fill("mia@example.com")
    mia.get_by_label("Phone (for SMS)").fill("+41791234567")
    mia.get_by_role("button", name="Save").click()
    expect(mia.locator("p.notice")).to_have_text("Saved.")
    expect(mia.get_by_role("textbox", name="Email")).to_have_value("mia@example.com")
    me = web.ok("GET", "/v1/me", token=tokens["mia"])
    assert (me["email"], me["phone"]) == ("mia@example.com", "+41791234567")

    mia.get_by_label("Phone (for SMS)").fill("not a phone")
    mia.get_by_role("button", name="Save").click()
    expect(mia.get_by_role("alert")).to_contain_text("phone")
    expect(mia.get_by_label("Phone (for SMS)")).to_have_attribute("aria-invalid", "true")

    mia.get_by_role("link", name="Follows").click()
    ops = mia.locator("#follow-ops")
    expect(ops).to_contain_text("required by your organisation")
    expect(ops.get_by_role("button", name=re.compile("Unfollow"))).to_have_count(0)

    new = mia.locator("form", has=mia.get_by_role("heading", name="Follow an account"))
    new.get_by_label("Handle").fill("status")
    new.get_by_label("email").check()
    new.get_by_role("button", name="Follow").click()
    expect(mia.locator("p.notice")).to_have_text("Following.")
    follows = {f["account"]: f for f in web.ok("GET", "/v1/me/follows", token=tokens["mia"])}
    assert follows["status"]["channels"] == ["app", "email"]

    row = mia.locator("#follow-status")
    row.get_by_label("sms").check()
    row.get_by_label("email").uncheck()
    row.get_by_role("button", name=re.compile("Save channels")).click()
    expect(mia.locator("p.notice")).to_have_text("Saved.")
    follows = {f["account"]: f for f in web.ok("GET", "/v1/me/follows", token=tokens["mia"])}
    assert follows["status"]["channels"] == ["app", "sms"]

    mia.locator("#follow-status").get_by_role("button", name=re.compile("Unfollow")).click()
    expect(mia.locator("p.notice")).to_have_text("Unfollowed.")
    expect(mia.locator("#follow-status")).to_have_count(0)
    shot(mia, "app-follows")

    new = mia.locator("form", has=mia.get_by_role("heading", name="Follow an account"))
    new.get_by_label("Handle").fill("nobody_at_all")
    new.get_by_role("button", name="Follow").click()
    expect(mia.get_by_role("alert")).to_contain_text("nobody_at_all")


def test_delivery_report_of_own_post(web: WebStack, context: ContextFactory) -> None:
    tokens = cast(web)
    web.ok("PATCH", "/v1/me", token=tokens["pat"], json={"email": "pat@example.com"})
    web.settle()
    mia = signed_in(context, tokens["mia"])
    compose(mia, "Ops: please restart your VPN client", as_="ops", severity="critical")
    post = mia.locator("#posts article").first
    expect(post).to_contain_text("Ops: please restart your VPN client")
    post_id = (post.get_attribute("id") or "").removeprefix("post-")
    post.get_by_role("link", name="Delivery report").click()
    expect(mia.get_by_role("heading", name="Delivery report")).to_be_visible()
    expect(mia.locator("main")).to_contain_text("Ops: please restart your VPN client")
    expect(mia.get_by_role("row", name=re.compile("^email"))).to_be_visible()
    expect(mia.get_by_role("table").last).to_contain_text("@pat")  # pat has an email address
    shot(mia, "app-deliveries")
    # someone who may not read it gets the API's answer, as a page
    eve = signed_in(context, tokens["eve"])
    response = eve.goto(f"/app/posts/{post_id}/deliveries")
    assert response is not None
    assert response.status == 404


def sign_out(page: Page) -> None:
    page.get_by_role("button", name=re.compile("Sign out")).click()
    expect(page).to_have_url(re.compile(r"/app/signin"))


def test_session_cookie_csrf_and_sign_out(web: WebStack, context: ContextFactory) -> None:
    tokens = cast(web)
    browser_context: BrowserContext = context()
    mia = browser_context.new_page()
    sign_in(mia, tokens["mia"])
    (cookie,) = [c for c in browser_context.cookies() if c["name"] == "muster_session"]
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/app"
    assert tokens["mia"] not in cookie["value"]  # encoded, and no script can read it anyway
    assert mia.evaluate("document.cookie") == ""

    csrf = mia.locator("form.composer input[name=csrf]").get_attribute("value")
    assert csrf
    before = web.ok("GET", "/v1/accounts/mia/posts", token=tokens["mia"])
    request = browser_context.request
    forged: dict[str, str | float | bool] = {"text": "forged", "severity": "info", "idem": "x" * 20}
    attempts: list[tuple[dict[str, str | float | bool], dict[str, str]]] = [
        (forged, {}),  # no token
        ({**forged, "csrf": "0" * 64}, {}),  # a wrong one
        ({**forged, "csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),  # from another site
    ]
    for form, headers in attempts:
        answer = request.post("/app/posts", form=form, headers=headers, max_redirects=0)
        assert answer.status == 403, answer.text()
    assert web.ok("GET", "/v1/accounts/mia/posts", token=tokens["mia"]) == before

    # signing in needs the sign-in page's own token (no login CSRF)
    stranger = context().request
    answer = stranger.post("/app/signin", form={"token": tokens["eve"]}, max_redirects=0)
    assert answer.status == 403

    sign_out(mia)
    expect(mia.locator("p.notice")).to_have_text("You are signed out.")
    mia.goto("/app")
    expect(mia).to_have_url(re.compile(r"/app/signin"))
    assert not [c for c in browser_context.cookies() if c["name"] == "muster_session"]

    mia.get_by_label("Your token").fill("mst_not_a_real_token")
    mia.get_by_role("button", name="Sign in").click()
    expect(mia.get_by_role("alert")).to_contain_text("not known")
    expect(mia.get_by_label("Your token")).to_have_attribute("aria-invalid", "true")
