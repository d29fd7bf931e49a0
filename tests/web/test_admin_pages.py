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


def test_escalation_policies_list_edit_and_delete(web: WebStack, context: ContextFactory) -> None:
    web.person("pat")
    web.person("mia")
    web.settle()
    page = admin_page(context)
    tabs = page.get_by_role("navigation", name="Administration")
    tabs.get_by_role("link", name="Escalation").click()
    expect(page.get_by_role("heading", name="Escalation policies")).to_be_visible()
    expect(page.locator("main")).to_contain_text("No escalation policy yet.")

    page.get_by_role("link", name="New policy").click()
    expect(page.get_by_role("heading", name="New escalation policy")).to_be_visible()
    page.get_by_label("Name").fill("drill")
    first, second = page.locator("#step-0"), page.locator("#step-1")
    first.get_by_label("After").fill("10")
    second.get_by_label("After").fill("30")
    second.get_by_label("Tell").select_option("manager")
    second.get_by_label("On", exact=True).select_option("list")
    second.get_by_label("email").check()
    second.get_by_label("sms").check()
    shot(page, "admin-policy-new")
    page.get_by_role("button", name="Save policy").click()
    expect(page.locator("p.notice")).to_have_text("Saved.")
    row = page.locator("#policies").get_by_role("row", name=re.compile(r"\bdrill\b"))
    expect(row).to_contain_text("after 10 min: recipient (chosen)")
    expect(row).to_contain_text("after 30 min: manager (email, sms)")
    saved = web.ok("GET", "/v1/escalation-policies/drill", token=ADMIN_TOKEN)
    assert saved["version"] == 1
    assert saved["steps"] == [
        {"after_s": 600, "to": "recipient", "channels": "chosen"},
        {"after_s": 1800, "to": "manager", "channels": ["email", "sms"]},
    ]
    shot(page, "admin-policies")

    # the API refuses: its message is shown, the field it named marked, the form as typed
    row.get_by_role("link", name="Edit").click()
    expect(page.get_by_role("heading", name="Escalation policy drill")).to_be_visible()
    expect(page.locator("#step-1").get_by_label("Tell")).to_have_value("manager")
    page.locator("#step-1").get_by_label("After").fill("5")
    third = page.locator("#step-2")
    third.get_by_label("After").fill("45")
    third.get_by_label("Tell").select_option("fallback")
    third.get_by_label("Fallback (for a fallback step)").fill("nobody")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("alert")).to_contain_text("step")
    expect(page.locator("#step-1").get_by_label("After")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#step-1").get_by_label("After")).to_have_value("5")
    expect(page.locator("#step-2").get_by_label("Fallback (for a fallback step)")).to_have_value(
        "nobody"
    )
    page.locator("#step-1").get_by_label("After").fill("30")
    page.get_by_role("button", name="Save policy").click()
    expect(page.get_by_role("alert")).to_contain_text("nobody")
    fallback = page.locator("#step-2").get_by_label("Fallback (for a fallback step)")
    expect(fallback).to_have_attribute("aria-invalid", "true")
    shot(page, "admin-policy-refused")
    assert web.ok("GET", "/v1/escalation-policies/drill", token=ADMIN_TOKEN)["version"] == 1

    fallback.fill("@mia")
    page.get_by_label("Run the steps again this many times").fill("2")
    page.get_by_label("Each loop after the last one's last step by").fill("90")
    page.get_by_label("Unit of the repeat's delay").select_option("s")
    page.get_by_label("At most this many steps per person (optional)").fill("4")
    page.get_by_role("button", name="Save policy").click()
    expect(page.locator("p.notice")).to_have_text("Saved.")
    saved = web.ok("GET", "/v1/escalation-policies/drill", token=ADMIN_TOKEN)
    assert saved["version"] == 2
    assert saved["steps"][2] == {
        "after_s": 2700,
        "to": "fallback",
        "channels": "chosen",
        "fallback": "mia",
    }
    assert saved["repeat"] == {"times": 2, "every_s": 90}
    assert saved["max_sends_per_recipient"] == 4

    # a form without its CSRF token changes nothing
    answer = page.context.request.post(
        "/app/admin/escalation-policies",
        form={"name": "drill", "step-0-after": "1"},
        max_redirects=0,
    )
    assert answer.status == 403
    forged = page.context.request.post(
        "/app/admin/escalation-policies/drill/delete", form={}, max_redirects=0
    )
    assert forged.status == 403
    assert web.ok("GET", "/v1/escalation-policies/drill", token=ADMIN_TOKEN)["version"] == 2

    row = page.locator("#policies").get_by_role("row", name=re.compile(r"\bdrill\b"))
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("p.notice")).to_contain_text("Deleted.")
    expect(page.locator("main")).to_contain_text("No escalation policy yet.")
    assert web.call("GET", "/v1/escalation-policies/drill", token=ADMIN_TOKEN).status_code == 404
    gone = page.goto("/app/admin/escalation-policies/drill")
    assert gone is not None
    assert gone.status == 404

    # not an admin: refused
    mia = context().new_page()
    sign_in(mia, web.person("nell"))
    response = mia.goto("/app/admin/escalation-policies")
    assert response is not None
    assert response.status == 403


def manager_of(web: WebStack, handle: str) -> Any:
    (found,) = web.ok("GET", f"/v1/accounts?q={handle}&kind=person", token=ADMIN_TOKEN)
    return found["manager"]


def test_a_persons_manager_on_the_accounts_page(web: WebStack, context: ContextFactory) -> None:
    web.person("pat")
    web.person("mia")
    web.team("ops")
    web.settle()
    page = admin_page(context)
    form = page.locator("form", has=page.get_by_role("heading", name="Set a manager"))
    form.get_by_label("Person").fill("pat")
    form.get_by_label("Manager").fill("@mia")
    form.get_by_role("button", name="Save manager").click()
    expect(page.locator("p.notice")).to_contain_text("Manager saved")
    table = page.locator("#accounts")
    expect(table.get_by_role("row", name=re.compile(r"\B@pat\b"))).to_contain_text("@mia")
    assert manager_of(web, "pat") == "mia"

    form = page.locator("form", has=page.get_by_role("heading", name="Set a manager"))
    form.get_by_label("Person").fill("pat")
    form.get_by_label("Manager").fill("ops")
    form.get_by_role("button", name="Save manager").click()
    expect(page.get_by_role("alert")).to_contain_text("not a person")
    expect(form.get_by_label("Manager")).to_have_attribute("aria-invalid", "true")
    expect(form.get_by_label("Manager")).to_have_value("ops")
    expect(form.get_by_label("Person")).to_have_value("pat")
    shot(page, "admin-manager-refused")
    assert manager_of(web, "pat") == "mia"

    form.get_by_label("Manager").fill("")
    form.get_by_role("button", name="Save manager").click()
    expect(page.locator("p.notice")).to_contain_text("Manager saved")
    assert manager_of(web, "pat") is None
