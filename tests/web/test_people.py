"""The people's directory (/app/people) in a real browser: search by name or handle, filter by
kind, page through, follow and unfollow from the list; an external finds teams only, an admin
also finds deactivated accounts."""

from __future__ import annotations

import re

import pytest

from muster.api.web import people
from web.conftest import ADMIN_TOKEN, ContextFactory, WebStack, needs_browser, shot, sign_in

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import expect  # noqa: E402


def cast(web: WebStack) -> dict[str, str]:
    tokens = {
        "mia": web.person("mia", display_name="Mia Wong"),
        "pat": web.person("pat", display_name="Pat Okafor"),
        "eve": web.person("eve", "external", display_name="Eve Santos"),
        "gone": web.person("gone", display_name="Gustav Left"),
    }
    web.team("ops", "mia", display_name="Ops at Example")
    web.team("payments", "pat", display_name="Payments")
    web.ok("PUT", "/v1/accounts/ops/enrolments", 202, token=ADMIN_TOKEN,
           json={"followers": ["mia"], "channels": ["app"], "mandatory": True})  # fmt: skip
    web.ok("PATCH", "/v1/accounts/gone", token=ADMIN_TOKEN, json={"active": False})
    web.settle()
    return tokens


def test_find_follow_and_unfollow_from_the_directory(
    web: WebStack, context: ContextFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = cast(web)
    page = context().new_page()
    sign_in(page, tokens["mia"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="People").click()
    expect(page.get_by_role("heading", name="People", level=1)).to_be_visible()
    rows = page.locator("#people li.person")
    expect(rows).to_have_count(6)  # admin, eve, mia, ops, pat, payments; not the deactivated
    expect(page.locator("#person-gone")).to_have_count(0)
    ops = page.locator("#person-ops")
    expect(ops).to_contain_text("Ops at Example")
    expect(ops).to_contain_text("required by your organisation")
    expect(ops.get_by_role("button", name=re.compile("Unfollow"))).to_have_count(0)
    expect(page.locator("#person-mia")).to_contain_text("You")

    search = page.get_by_role("search", name="Find accounts")
    search.get_by_label("Name or handle").fill("okafor")
    search.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    pat = page.locator("#person-pat")
    expect(pat.locator(".name")).to_have_text("Pat Okafor")
    expect(pat.locator(".account")).to_have_text("@pat")
    expect(pat.get_by_role("link", name="Pat Okafor", exact=True)).to_have_attribute(
        "href", "/@pat"
    )
    pat.get_by_role("button", name="Follow Pat Okafor @pat").click()
    expect(page).to_have_url(re.compile(r"/app/people\?q=okafor&notice=followed"))
    expect(page.locator("p.notice")).to_have_text("Following.")
    expect(pat).to_contain_text("Following")
    follows = {f["account"] for f in web.ok("GET", "/v1/me/follows", token=tokens["mia"])}
    assert "pat" in follows
    shot(page, "people-followed")
    pat.get_by_role("button", name="Unfollow Pat Okafor @pat").click()
    expect(page.locator("p.notice")).to_have_text("Unfollowed.")
    expect(pat.get_by_role("button", name="Follow Pat Okafor @pat")).to_be_visible()
    follows = {f["account"] for f in web.ok("GET", "/v1/me/follows", token=tokens["mia"])}
    assert "pat" not in follows

    # a kind filter, and pages (made small here) with a link to the next one
    monkeypatch.setattr(people, "PAGE", 2)
    page.goto("/app/people?kind=person")
    expect(rows).to_have_count(2)
    expect(page.locator("#person-admin")).to_be_visible()
    page.get_by_role("link", name="More results").click()
    expect(page).to_have_url(re.compile(r"kind=person&after=eve"))
    expect(page.locator("#person-mia")).to_be_visible()
    expect(page.get_by_label("Kind")).to_have_value("person")

    # a follow form may only send the browser back to this page, nowhere else
    assert people.here("a b", "team", None) == "/app/people?q=a+b&kind=team"


def test_externals_find_teams_and_admins_find_deactivated_accounts(
    web: WebStack, context: ContextFactory
) -> None:
    tokens = cast(web)
    eve = context().new_page()
    sign_in(eve, tokens["eve"])
    eve.goto("/app/people")
    expect(eve.locator("#people li.person")).to_have_count(2)
    expect(eve.locator("#people")).to_contain_text("Ops at Example")
    expect(eve.locator("#people")).not_to_contain_text("Mia Wong")
    expect(eve.get_by_label("Kind").locator("option")).to_have_count(3)  # all, teams, services
    eve.goto("/app/people?q=mia")
    expect(eve.locator("#empty")).to_have_text("No account matches that search.")

    admin = context().new_page()
    sign_in(admin, ADMIN_TOKEN)
    admin.goto("/app/people?q=gustav")
    gone = admin.locator("#person-gone")
    expect(gone).to_contain_text("deactivated")
    expect(gone.get_by_role("button")).to_have_count(0)  # nothing to follow
