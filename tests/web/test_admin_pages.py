"""The admin pages in a real browser: accounts (create, list), posters, enrolments, dead letters.

Each change is made through the page and checked through the JSON API (or Redis, for dead
letters), so the page is shown to do what it says, not only to say it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from muster import events, keys
from muster.dlq import list_dead_letters
from web.conftest import ADMIN_TOKEN, ContextFactory, WebStack, needs_browser, shot, sign_in

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import Page, expect  # noqa: E402


def admin_page(context: ContextFactory) -> Page:
    page = context().new_page()
    sign_in(page, ADMIN_TOKEN)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    expect(page.get_by_role("heading", name="Accounts", exact=True)).to_be_visible()
    return page


def test_create_accounts_and_the_new_token_signs_in(web: WebStack, context: ContextFactory) -> None:
    page = admin_page(context)
    form = page.locator("form", has=page.get_by_role("heading", name="Create an account"))
    form.get_by_label("Handle").fill("nora")
    form.get_by_label("Display name (optional)").fill("Nora <b>N</b>")
    form.get_by_label("Role (people only)").select_option("external")
    form.get_by_role("button", name="Create").click()
    expect(page.get_by_role("heading", name="Created @nora")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Nora <b>N</b>")  # escaped, shown literally
    token = page.locator("#new-token").inner_text()
    assert token.startswith("mst_")
    shot(page, "admin-created")

    page.get_by_role("link", name="Back to accounts").click()
    table = page.locator("#accounts")
    expect(table.get_by_role("row", name=re.compile(r"\B@nora\b"))).to_contain_text("external")
    expect(table.get_by_role("row", name=re.compile(r"\B@admin\b"))).to_contain_text("admin")

    form = page.locator("form", has=page.get_by_role("heading", name="Create an account"))
    form.get_by_label("Handle").fill("nora")
    form.get_by_role("button", name="Create").click()
    expect(page.get_by_role("alert")).to_contain_text("taken")
    expect(form.get_by_label("Handle")).to_have_attribute("aria-invalid", "true")
    shot(page, "admin-accounts")

    nora = context().new_page()
    sign_in(nora, token)
    expect(nora.get_by_role("button", name=re.compile("Sign out"))).to_contain_text("@nora")
    # not an admin: the admin pages are refused, and not linked
    expect(nora.get_by_role("link", name="Admin")).to_have_count(0)
    response = nora.goto("/app/admin/accounts")
    assert response is not None
    assert response.status == 403


def test_posters_and_enrolments(web: WebStack, context: ContextFactory) -> None:
    web.person("pat")
    web.person("quinn")
    web.team("ops", display_name="Ops")
    web.settle()
    page = admin_page(context)
    page.get_by_role("navigation", name="Administration").get_by_role(
        "link", name="Posters"
    ).click()
    grant = page.locator("form", has=page.get_by_role("heading", name="Add a poster"))
    grant.get_by_label("Team or service").fill("ops")
    grant.get_by_label("Person").fill("pat")
    grant.get_by_role("button", name="Add poster").click()
    expect(page.locator("p.notice")).to_have_text("Poster added.")
    expect(page.locator("#posters")).to_contain_text("@pat")
    assert web.ok("GET", "/v1/accounts/ops/posters", token=ADMIN_TOKEN)["posters"] == ["pat"]
    shot(page, "admin-posters")
    page.locator("#posters").get_by_role("button", name="Remove @pat").click()
    expect(page.locator("p.notice")).to_have_text("Poster removed.")
    assert web.ok("GET", "/v1/accounts/ops/posters", token=ADMIN_TOKEN)["posters"] == []

    page.get_by_role("link", name="Enrolments").click()
    form = page.locator("form", has=page.get_by_role("heading", name="Enrol followers"))
    form.get_by_label("Account to follow").fill("ops")
    form.get_by_label("Or these people").fill("pat, quinn")
    form.get_by_label("email").check()
    form.get_by_label("Mandatory: they cannot unfollow").check()
    form.get_by_role("button", name="Enrol").click()
    expect(page.get_by_role("status").filter(has_text="follow @ops")).to_have_text(
        "2 people follow @ops now, and cannot unfollow."
    )
    web.settle()  # the timeline worker expands the enrolment into one follow each
    follows = web.ok("GET", "/v1/me/follows", token=web.tokens["pat"])
    assert follows == [{"account": "ops", "channels": ["app", "email"], "mandatory": True}]

    form.get_by_label("Account to follow").fill("ops")
    form.get_by_label("Every member, now and in future").check()
    form.get_by_role("button", name="Enrol").click()
    rules = page.get_by_role("table")
    expect(rules.get_by_role("row", name=re.compile(r"^@ops"))).to_contain_text("app")
    shot(page, "admin-enrolments")


def test_dead_letters_list_and_redrive(web: WebStack, context: ContextFactory) -> None:
    # a real event (the admin's creation), dead-lettered as the consumer loop would
    entries: Any = web.redis.xrange(keys.events(0), count=1)
    first_id, fields = entries[0]
    payload: bytes = fields[events.STREAM_FIELD]
    assert msgspec.json.decode(payload)["type"] == "AccountCreated"
    web.redis.xadd(
        keys.dead_letters(0),
        {
            "stream": keys.events(0),
            "group": "timeline",
            "entry": first_id,
            "error": "RuntimeError: <boom>",
            "attempts": "3",
            "e": payload,
        },
    )
    page = admin_page(context)
    page.get_by_role("link", name="Dead letters").click()
    table = page.locator("#dead-letters")
    row = table.get_by_role("row", name=re.compile("AccountCreated"))
    expect(row).to_contain_text("timeline")
    expect(row).to_contain_text("RuntimeError: <boom>")
    expect(table).not_to_contain_text("token_hash")  # payloads are not shown
    shot(page, "admin-dead-letters")
    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Send back the chosen ones").click()
    expect(page.locator("p.notice")).to_have_text("Sent back for another try.")
    expect(page.locator("main")).to_contain_text("No dead letters")
    assert list_dead_letters(web.redis, 1) == []
    assert web.redis.xlen(keys.retry(0, "timeline")) == 1  # back to the group that gave up
    web.settle()  # the timeline group took it back from its retry stream, without a new dead letter


def test_search_reset_a_token_deactivate_and_reactivate(
    web: WebStack, context: ContextFactory
) -> None:
    old = web.person("mia", display_name="Mia Rossi")
    web.person("pat")
    page = admin_page(context)
    page.get_by_role("searchbox", name="Search accounts").fill("ross")
    page.get_by_role("button", name="Search").click()
    table = page.locator("#accounts")
    expect(table.locator("tbody tr")).to_have_count(1)
    row = table.get_by_role("row", name=re.compile(r"\B@mia\b"))
    expect(row).to_contain_text("Active")

    row.get_by_role("button", name="Reset token of @mia").click()
    expect(page.get_by_role("heading", name="New token for @mia")).to_be_visible()
    new = page.locator("#new-token").inner_text()
    assert new.startswith("mst_")
    assert web.call("GET", "/v1/me", token=old).status_code == 401
    assert web.ok("GET", "/v1/me", token=new)["handle"] == "mia"
    shot(page, "admin-token-reset")

    mia = context().new_page()
    sign_in(mia, new)
    page.goto("/app/admin/accounts?q=mia")
    page.locator("#accounts").get_by_role("button", name="Deactivate @mia").click()
    expect(page.locator("p.notice")).to_contain_text("deactivated")
    row = page.locator("#accounts").get_by_role("row", name=re.compile(r"\B@mia\b"))
    expect(row).to_contain_text("Deactivated")
    shot(page, "admin-deactivated")
    assert web.call("GET", "/v1/me", token=new).json()["error"]["code"] == "account_deactivated"
    mia.reload()  # her open session ends: back to the sign-in page
    expect(mia.get_by_label("Your token")).to_be_visible()
    mia.get_by_label("Your token").fill(new)
    mia.get_by_role("button", name="Sign in").click()
    expect(mia.get_by_role("alert")).to_contain_text("deactivated")
    # no button to deactivate oneself
    expect(page.locator("#accounts").get_by_role("button", name="Deactivate @admin")).to_have_count(
        0
    )

    row.get_by_role("button", name="Reactivate @mia").click()
    expect(page.locator("p.notice")).to_have_text("Account reactivated.")
    assert web.ok("GET", "/v1/me", token=new)["active"] is True


def test_a_person_makes_and_revokes_tokens_for_scripts(
    web: WebStack, context: ContextFactory
) -> None:
    own = web.person("mia")
    page = context().new_page()
    sign_in(page, own)
    page.goto("/app/me")
    page.get_by_role("link", name="Tokens for scripts").click()
    expect(page.get_by_role("heading", name="Tokens for scripts")).to_be_visible()
    expect(page.locator("main")).to_contain_text("No tokens yet.")
    form = page.locator("form", has=page.get_by_role("heading", name="Make a token"))
    form.get_by_label("Name").fill("deploy notifier")
    form.get_by_label("Expires after (days, optional)").fill("30")
    form.get_by_role("button", name="Make token").click()
    script = page.locator("#new-token").inner_text()
    assert script.startswith("mst_")
    assert web.ok("GET", "/v1/me", token=script)["handle"] == "mia"
    row = page.locator("#tokens").get_by_role("row", name=re.compile("deploy notifier"))
    expect(row).not_to_contain_text("Never")
    shot(page, "tokens-made")

    page.goto("/app/me/tokens")  # shown once: not on the page any more
    expect(page.locator("#new-token")).to_have_count(0)
    page.get_by_role("button", name="Revoke deploy notifier").click()
    expect(page.locator("p.notice")).to_contain_text("revoked")
    assert web.call("GET", "/v1/me", token=script).status_code == 401
    assert web.ok("GET", "/v1/me", token=own)["handle"] == "mia"
