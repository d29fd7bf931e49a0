"""The README's screenshots, taken from the running app so they show what it looks like now.

Each run writes docs/screenshots/<name>.png (committed: the README shows them) from a small
incident in a real browser at desktop width; `test_the_readme_shows_only_these` keeps the
README's images and this list in step.
"""

from __future__ import annotations

import re
from pathlib import Path

from web.conftest import ADMIN_TOKEN, ContextFactory, WebStack, needs_browser, sign_in

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import Page, expect  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
TAKEN = ("home-desktop", "signin-desktop")
DESKTOP = {"width": 1280, "height": 800}


def save(page: Page, name: str) -> None:
    assert name in TAKEN
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), animations="disabled")


def test_the_readme_shows_only_these() -> None:
    shown = re.findall(
        r"!\[[^\]]*\]\(docs/screenshots/([a-z0-9-]+)\.png\)", (ROOT / "README.md").read_text()
    )
    assert shown
    assert set(shown) <= set(TAKEN), set(shown) - set(TAKEN)


def test_readme_screenshots(web: WebStack, context: ContextFactory) -> None:
    mia = web.person("mia", display_name="Mia Rossi")
    sam = web.person("sam", display_name="Sam Lee")
    web.team("ops", "sam", display_name="Operations")
    web.team("payments", "sam", display_name="Payments")
    for team in ("ops", "payments"):
        web.ok(
            "PUT",
            f"/v1/accounts/{team}/enrolments",
            202,
            token=ADMIN_TOKEN,
            json={"followers": "all_members", "channels": ["app", "email"], "mandatory": True},
        )
    web.settle()
    web.post(
        sam,
        "Card payments are slower than usual; we are looking into it.",
        as_="payments",
        severity="warning",
        visibility="public",
    )
    first = web.post(
        sam,
        "Database failover at 14:00 UTC: writes pause for about a minute.",
        as_="ops",
        severity="critical",
        visibility="public",
    )
    web.post(
        sam,
        "Failover done; writes are back. Watching replication lag.",
        as_="ops",
        in_reply_to=first["id"],
    )
    web.settle()

    signin = context(viewport=DESKTOP).new_page()
    signin.goto("/app/signin")
    expect(signin.get_by_label("Your token")).to_be_visible()
    save(signin, "signin-desktop")

    page = context(viewport=DESKTOP).new_page()
    sign_in(page, mia)
    expect(page.locator("main")).to_contain_text("Database failover")
    save(page, "home-desktop")
