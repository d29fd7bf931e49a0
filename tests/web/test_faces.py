"""Names, faces, times and counters: what the server writes and what static/muster.js writes
must agree, and each works without JavaScript.

- Relative times: web/times.py and muster.js's `relative` give the same text for the same
  moments (the browser's clock is Playwright's fake clock, set to the Python side's "now").
- Avatars: a post that arrives live gets the same initials, tone and display names as the
  server renders for it after a reload.
- Character counters: tied to MUSTER_MAX_POST_CHARS, announced politely near and over the
  limit, never blocking the submission the server judges.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from muster.api.web import names, times
from muster.settings import Settings
from web.conftest import (
    ContextFactory,
    WebStack,
    needs_browser,
    shot,
    sign_in,
)

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import Browser, expect  # noqa: E402

NOW = datetime(2025, 3, 10, 12, 0, 0, tzinfo=UTC)
AGO = {
    "future": -30,
    "0s": 0,
    "59s": 59,
    "60s": 60,
    "59m59s": 3599,
    "1h": 3600,
    "23h59m": 86399,
    "24h": 86400,
    "47h59m": 172799,
    "48h": 172800,
    "6d23h": 7 * 86400 - 1,
    "7d": 7 * 86400,
    "400d": 400 * 86400,
}


def moment(seconds_ago: int) -> str:
    return (
        (NOW - timedelta(seconds=seconds_ago))
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def test_relative_times_read_as_people_say_them() -> None:
    said = {name: times.relative(moment(s), NOW) for name, s in AGO.items()}
    assert said == {
        "future": "just now",
        "0s": "just now",
        "59s": "just now",
        "60s": "1 min ago",
        "59m59s": "59 min ago",
        "1h": "1 h ago",
        "23h59m": "23 h ago",
        "24h": "yesterday",
        "47h59m": "yesterday",
        "48h": "2 days ago",
        "6d23h": "6 days ago",
        "7d": "3 Mar",
        "400d": "4 Feb 2024",
    }
    assert times.absolute("2025-03-01T14:03:05.123Z") == "2025-03-01 14:03 UTC"
    assert times.relative("not a time", NOW) == "not a time"


def test_initials_and_tones() -> None:
    assert names.initials("Mia Wong") == "MW"
    assert names.initials("ops") == "O"
    assert names.initials("  Ops at  Example ") == "OE"
    assert names.initials("élodie durand") == "ÉD"
    assert names.initials("   ") == "?"
    assert names.tone("ops") == names.tone("ops")
    assert {names.tone(h) for h in ("ops", "mia", "pat", "eve", "sales", "payments", "admin")} != {
        names.tone("ops")
    }, "every handle got the same colour"
    assert all(0 <= names.tone(h) < names.TONES for h in ("a", "zz_9", "x" * 30))


def test_the_script_and_the_server_agree_on_relative_times(
    web: WebStack, context: ContextFactory
) -> None:
    created = context()
    created.clock.install(time=NOW - timedelta(seconds=60))
    page = created.new_page()
    page.goto("/app/signin")  # any page: the script runs on every page
    page.evaluate(
        """(moments) => {
          for (const [name, value] of Object.entries(moments)) {
            const t = document.createElement('time');
            t.setAttribute('data-field', 'when');
            t.setAttribute('datetime', value);
            t.id = 'case-' + name;
            document.body.appendChild(t);
          }
        }""",
        {name: moment(s) for name, s in AGO.items()},
    )
    page.clock.run_for(60_000)  # the script's refresh runs (every 30 s); its now is NOW
    said = {name: page.locator(f"#case-{name}").inner_text() for name in AGO}
    assert said == {name: times.relative(moment(s), NOW) for name, s in AGO.items()}


def cast(web: WebStack) -> dict[str, str]:
    tokens = {
        "mia": web.person("mia", display_name="Mia Wong"),
        "pat": web.person("pat", display_name="Pat Okafor"),
    }
    web.team("ops", "mia", "pat", display_name="Équipe réseau")
    web.follow(tokens["mia"], "ops")
    web.settle()
    return tokens


def test_names_avatars_and_times_of_a_live_post_match_the_server(
    web: WebStack, context: ContextFactory
) -> None:
    tokens = cast(web)
    web.post(tokens["mia"], "An earlier post, so the page knows one name", as_="ops")
    web.settle()
    page = context().new_page()
    sign_in(page, tokens["mia"])
    expect(page.locator("body")).to_have_attribute("data-live", "connected")
    web.post(tokens["pat"], "Arrived live", as_="ops", visibility="public", severity="warning")
    live = page.locator("#posts article").first
    expect(live).to_contain_text("Arrived live")
    expect(live.locator(".by")).to_have_text(re.compile(r"by\s+Pat Okafor\s+@pat"))  # fetched

    def face(article_text: str) -> dict[str, str | None]:
        article = page.locator("#posts article", has_text=article_text)
        avatar = article.locator(".avatar")
        return {
            "initials": avatar.inner_text(),
            "tone": avatar.get_attribute("data-tone"),
            "name": article.locator(".meta .name").inner_text(),
            "by": " ".join(article.locator(".by").inner_text().split()),
            "when": article.locator("time").inner_text(),
            "title": article.locator("time").get_attribute("title"),
        }

    arrived = face("Arrived live")
    assert arrived["initials"] == names.initials("Équipe réseau") == "ÉR"
    assert arrived["tone"] == str(names.tone("ops"))
    assert arrived["name"] == "Équipe réseau"
    assert arrived["when"] == "just now"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", arrived["title"] or "")
    page.reload()
    assert face("Arrived live") == arrived  # the same as the server writes it

    # the absolute time is at hand: in the title, on hover, and shown on the thread's post
    when = page.locator("#posts article", has_text="Arrived live").locator("a.when")
    before = when.bounding_box()
    when.hover()
    tip = when.locator(".absolute").bounding_box()
    assert tip is not None
    assert tip["width"] > 50, "no absolute time on hover"
    assert when.bounding_box() == before, "hovering the time moved it"
    when.click()
    current = page.locator("article.current")
    expect(current.locator(".absolute")).to_be_visible()
    expect(current.locator(".absolute")).to_have_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"))


def test_without_javascript_times_and_counters_are_plain_text(
    web: WebStack, context: ContextFactory
) -> None:
    tokens = cast(web)
    web.post(tokens["mia"], "Written a moment ago", as_="ops")
    web.settle()
    page = context(java_script_enabled=False).new_page()
    sign_in(page, tokens["mia"])
    expect(page.locator("#posts time").first).to_have_text("just now")
    expect(page.locator("#text-count")).to_have_text(
        f"Up to {web.settings.max_post_chars} characters."
    )


@pytest.fixture
def small_limit(web_settings: Settings, open_web: Callable[[Settings], WebStack]) -> WebStack:
    return open_web(msgspec.structs.replace(web_settings, max_post_chars=40))


def test_counters_follow_the_limit_the_api_enforces(
    small_limit: WebStack, browser: Browser
) -> None:
    web = small_limit
    tokens = cast(web)
    created = browser.new_context(base_url=web.url)
    try:
        page = created.new_page()
        sign_in(page, tokens["mia"])
        counter = page.locator("#text-count")
        live = page.locator("#text-count-live")
        expect(counter).to_have_text("40 characters left")
        page.get_by_label("Text").fill("x" * 15)
        expect(counter).to_have_text("25 characters left")
        expect(counter).to_have_attribute("data-state", "ok")
        page.get_by_label("Text").fill("é" * 21)  # code points, as the API counts
        expect(counter).to_have_text("19 characters left")
        expect(counter).to_have_attribute("data-state", "near")
        expect(live).to_have_text("19 characters left")  # once typing pauses
        page.get_by_label("Text").fill("🙂" * 43)
        expect(counter).to_have_text("3 characters over the limit of 40")
        expect(counter).to_have_attribute("data-state", "over")
        expect(live).to_have_text("3 characters over the limit of 40")
        shot(page, "composer-counter-over")
        page.get_by_label("Text").fill("y" * 41)
        page.get_by_label("Text").fill("short again")
        expect(counter).to_have_attribute("data-state", "ok")
        expect(live).to_have_text("")  # nothing to announce far from the limit
        page.get_by_label("Text").fill("🙂" * 43)
        # over the limit the form still goes: the API refuses it, with its reason
        page.get_by_role("button", name="Post").click()
        expect(page.get_by_role("alert")).to_contain_text("the limit is 40")
        expect(page.get_by_label("Text")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#text-count")).to_have_text("3 characters over the limit of 40")

        page.goto("/app/dms/pat")
        expect(page.locator("#dm-text-count")).to_have_text("40 characters left")
        page.get_by_label("Message", exact=True).fill("y" * 41)
        expect(page.locator("#dm-text-count")).to_have_text("1 character over the limit of 40")
        page.goto("/app/dms")
        expect(page.locator("#dm-text-count")).to_have_text("40 characters left")
    finally:
        created.close()
