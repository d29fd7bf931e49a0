"""Roll-calls in the web app, in a real browser: composing one, answering from the timeline
in one tap (and changing the answer), and the author's report page — live over SSE, and the
same on reload — with "Mark handled", extend and close; who may see the report.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from web.conftest import ADMIN_TOKEN, ContextFactory, WebStack, needs_browser, shot, sign_in

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import Page, expect  # noqa: E402

OPTIONS = [
    {"key": "safe", "label": "Safe", "kind": "ok"},
    {"key": "help", "label": "Need help", "kind": "help"},
]


def cast(web: WebStack) -> dict[str, str]:
    """mia posts as ops; pat, lena and kim follow it (every member is enrolled)."""
    tokens = {h: web.person(h) for h in ("mia", "pat", "lena", "kim")}
    web.team("ops", "mia", display_name="Ops")
    web.ok(
        "PUT",
        "/v1/accounts/ops/enrolments",
        202,
        token=ADMIN_TOKEN,
        json={"followers": "all_members", "channels": ["app"], "mandatory": True},
    )
    web.settle()
    return tokens


def signed_in(context: ContextFactory, token: str) -> Page:
    page = context().new_page()
    sign_in(page, token)
    return page


def open_rollcall(web: WebStack, token: str) -> str:
    deadline = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    post = web.post(
        token,
        "Fire alarm in building A. Are you safe?",
        as_="ops",
        severity="critical",
        rollcall={"options": OPTIONS, "deadline": deadline},
    )
    web.settle()
    rc: str = post["id"]
    return rc


def test_compose_answer_in_one_tap_and_change(web: WebStack, context: ContextFactory) -> None:
    tokens = cast(web)
    mia = signed_in(context, tokens["mia"])
    form = mia.locator("form.composer")
    form.get_by_label("Text").fill("Power cut on floor 3: are you safe?")
    form.get_by_label("Post as").select_option("ops")
    form.locator("summary", has_text="Roll-call").click()
    form.get_by_label("Ask everyone to answer: a roll-call").check()
    form.get_by_label("Answer within").select_option("30")
    form.get_by_role("button", name="Post").click()
    expect(mia.locator(".notice")).to_be_visible()
    web.settle()
    mine = mia.locator("article.post", has_text="Power cut on floor 3")
    expect(mine.locator(".rollcall")).to_contain_text("0 of 4 accounted for")
    expect(mine.get_by_role("link", name="Live report")).to_be_visible()

    pat = signed_in(context, tokens["pat"])
    card = pat.locator("article.post", has_text="Power cut on floor 3")
    buttons = card.locator(".rollcall-options button")
    expect(buttons).to_have_text(["Safe", "Need help"])
    buttons.first.click()  # one tap
    card = pat.locator("article.post", has_text="Power cut on floor 3")
    expect(card.locator(".rollcall")).to_contain_text("You answered: Safe · change")
    shot(pat, "rollcall-answered")
    card.locator("summary", has_text="change").click()
    card.get_by_role("button", name="Need help").click()
    card = pat.locator("article.post", has_text="Power cut on floor 3")
    expect(card.locator(".rollcall")).to_contain_text("You answered: Need help · change")

    # the author's report: counts and who needs help, on a fresh load
    mia.goto("/app")
    mia.get_by_role("link", name="Live report").first.click()
    expect(mia.locator("h1")).to_contain_text("Roll-call report")
    expect(mia.locator(".tile", has_text="Need help")).to_contain_text("1")
    expect(mia.locator("#help-rows")).to_contain_text("@pat")

    # someone asked cannot open the report; nor an outsider's URL guess
    rc = mia.url.rsplit("/", 1)[-1]
    response = pat.goto(f"/app/rollcalls/{rc}")
    assert response is not None
    assert response.status == 404


def test_the_report_updates_live_and_acts(web: WebStack, context: ContextFactory) -> None:
    tokens = cast(web)
    rc = open_rollcall(web, tokens["mia"])
    mia = signed_in(context, tokens["mia"])
    mia.goto(f"/app/rollcalls/{rc}")
    expect(mia.locator("#live-state")).to_have_text("Live")
    mia.evaluate("window.__sameDocument = true")
    expect(mia.locator(".rc-headline")).to_contain_text("0% accounted for")
    expect(mia.locator(".rc-waiting")).to_contain_text("@lena")

    path = f"/v1/rollcalls/{rc}/responses"
    web.ok("POST", path, token=tokens["pat"], json={"option": "safe"})
    web.ok("POST", path, token=tokens["lena"], json={"option": "help", "note": "stuck in lift 2"})
    expect(mia.locator("#help-rows tr#help-lena")).to_contain_text("stuck in lift 2")
    expect(mia.locator(".rc-headline")).to_contain_text("50% accounted for")
    expect(mia.locator(".tile", has_text="Need help").locator("dd")).to_have_text("1")
    expect(mia.locator("[data-count='opt:safe']")).to_have_text("1")
    # the lists follow (the page fetches itself again, throttled), still without a reload
    expect(mia.locator("#rc-waiting")).not_to_contain_text("@pat")
    expect(mia.locator("#rc-waiting")).to_contain_text("@kim")
    assert mia.evaluate("window.__sameDocument === true"), "the page reloaded"
    shot(mia, "rollcall-report-live")

    # mark handled (a form post; the help row that arrived live works like a loaded one)
    mia.locator("#help-lena").get_by_role("button", name="Mark handled").click()
    expect(mia.locator(".notice")).to_have_text("Marked handled.")
    expect(mia.locator("#help-empty")).to_be_visible()
    expect(mia.locator(".tile", has_text="Need help").locator("dd")).to_have_text("0")

    kim = signed_in(context, tokens["kim"])  # her page shows the buttons; it closes meanwhile
    mia.get_by_role("button", name="Extend").click()
    expect(mia.locator(".notice")).to_have_text("Deadline extended.")
    mia.get_by_role("button", name="Close roll-call").click()
    expect(mia.locator(".notice")).to_contain_text("Roll-call closed")
    expect(mia.locator("#rc-state")).to_have_text("closed")
    expect(mia.get_by_role("button", name="Close roll-call")).to_have_count(0)

    card = kim.locator("article.post", has_text="Fire alarm in building A")
    with kim.expect_response(lambda r: r.request.method == "POST") as late:
        card.get_by_role("button", name="Safe").click()
    assert late.value.status == 410  # an answer from a stale page: refused, nothing recorded
    expect(kim.locator("main")).to_contain_text("closed")
    report = web.ok("GET", f"/v1/rollcalls/{rc}", token=tokens["mia"])
    assert report["counts"]["answered"] == 2
    kim.goto("/app")
    card = kim.locator("article.post", has_text="Fire alarm in building A")
    expect(card.locator(".rollcall")).to_contain_text("It closed before you answered.")
    expect(card.locator(".rollcall-options")).to_have_count(0)


def test_a_bad_roll_call_from_the_composer_is_refused(
    web: WebStack, context: ContextFactory
) -> None:
    tokens = cast(web)
    mia = signed_in(context, tokens["mia"])
    form = mia.locator("form.composer")
    form.get_by_label("Text").fill("No deadline to speak of")
    form.locator("summary", has_text="Roll-call").click()
    form.get_by_label("Ask everyone to answer: a roll-call").check()
    # a forged choice (the select offers numbers only): the deadline becomes now
    mia.evaluate("document.getElementById('rollcall_minutes').options[0].value = 'soon'")
    form.get_by_label("Answer within").select_option(index=0)
    form.get_by_role("button", name="Post").click()
    expect(mia.get_by_role("alert")).to_contain_text("deadline")
    expect(mia.get_by_label("Ask everyone to answer: a roll-call")).to_be_checked()
    web.settle()
    home = web.ok("GET", "/v1/timelines/home", token=tokens["mia"])
    assert all("No deadline" not in p["text"] for p in home)
