"""Accessibility of every page, checked in the browser: landmarks, one h1, labelled controls,
named buttons and links, text contrast (WCAG AA, light and dark schemes), and the keyboard:
a skip link, visible focus, forms usable without a mouse.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from web.conftest import ADMIN_TOKEN, ContextFactory, WebStack, needs_browser, sign_in

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import Page, expect  # noqa: E402

AUDIT = """
() => {
  const problems = [];
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length)
    && !el.closest('.visually-hidden, [hidden], template');
  if (!document.documentElement.lang) problems.push('html has no lang');
  if (document.querySelectorAll('main').length !== 1) problems.push('not exactly one <main>');
  if (document.querySelectorAll('h1').length !== 1) problems.push('not exactly one <h1>');
  if (!document.title.trim()) problems.push('no <title>');
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden' || !visible(el)) continue;
    const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby');
    if (!named) problems.push('unlabelled ' + el.outerHTML.slice(0, 80));
  }
  for (const el of document.querySelectorAll('button, a[href]')) {
    if (!visible(el)) continue;
    if (!(el.textContent.trim() || el.getAttribute('aria-label'))) {
      problems.push('nameless ' + el.outerHTML.slice(0, 80));
    }
  }
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,/]+/).filter(Boolean).map(Number);
    return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
  };
  const blend = (top, bottom) => ({
    r: top.r * top.a + bottom.r * (1 - top.a),
    g: top.g * top.a + bottom.g * (1 - top.a),
    b: top.b * top.a + bottom.b * (1 - top.a),
    a: 1,
  });
  const background = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
    }
    let bg = {r: 255, g: 255, b: 255, a: 1};
    for (let i = layers.length - 1; i >= 0; i--) bg = blend(layers[i], bg);
    return bg;
  };
  const channel = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = (c) => 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
  for (const el of document.querySelectorAll('body *')) {
    if (!visible(el) || el.closest('option, select, details:not([open]) > :not(summary)')) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const style = getComputedStyle(el);
    const bg = background(el);
    const fg = blend(parse(style.color), bg);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (parseInt(style.fontWeight, 10) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) {
      problems.push(`contrast ${ratio.toFixed(2)} for "${el.textContent.trim().slice(0, 40)}"`);
    }
  }
  return problems;
}
"""


def audit(page: Page) -> list[str]:
    problems: list[str] = page.evaluate(AUDIT)
    landmarks = {
        "banner": page.get_by_role("banner").count(),
        "main": page.get_by_role("main").count(),
    }
    problems += [f"{name} landmark missing" for name, n in landmarks.items() if n < 1]
    return problems


def content(web: WebStack) -> dict[str, Any]:
    mia = web.person("mia", email="mia@example.com")
    eve = web.person("eve", "external")
    web.team("ops", "mia", display_name="Ops")
    web.follow(mia, "ops")
    web.follow(eve, "ops")
    web.settle()
    posts = [
        web.post(mia, "All good", as_="ops", visibility="public"),
        web.post(mia, "Degraded", as_="ops", visibility="public", severity="warning"),
        web.post(mia, "Down", as_="ops", visibility="public", severity="critical"),
        web.post(mia, "Internal note", as_="ops", severity="critical"),
    ]
    web.settle()
    deadline = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    options = [
        {"key": "safe", "label": "Safe", "kind": "ok"},
        {"key": "help", "label": "Need help", "kind": "help"},
    ]
    rollcall = web.post(mia, "Are you safe?", as_="ops", visibility="public",
                        rollcall={"options": options, "deadline": deadline})  # fmt: skip
    web.post(eve, "Same here", in_reply_to=posts[2]["id"])
    web.dm(mia, "eve", "Hello Eve")
    web.dm(eve, "mia", "Hello Mia")
    web.settle()
    web.ok("POST", f"/v1/rollcalls/{rollcall['id']}/responses", token=eve,
           json={"option": "help", "note": "Stuck at the gate"})  # fmt: skip
    return {"mia": mia, "eve": eve, "post": posts[2]["id"], "rollcall": rollcall["id"]}


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_page_passes_the_audit(web: WebStack, context: ContextFactory, scheme: str) -> None:
    data = content(web)
    pages = {
        "status": "/@ops",
        "status thread": f"/@ops/posts/{data['post']}",
        "banner": "/@ops/banner",
    }
    anonymous = context(color_scheme=scheme).new_page()
    problems = {}
    for name, path in pages.items():
        anonymous.goto(path)
        if name != "banner":  # the banner is a fragment for other sites' pages
            problems[name] = audit(anonymous)
        else:
            problems[name] = [p for p in audit(anonymous) if "h1" not in p and "banner" not in p]
    anonymous.goto("/app/signin")
    problems["sign-in"] = audit(anonymous)

    admin = context(color_scheme=scheme).new_page()
    sign_in(admin, ADMIN_TOKEN)
    app_pages = {
        "home": "/app",
        "thread": f"/app/posts/{data['post']}",
        "deliveries": f"/app/posts/{data['post']}/deliveries",
        "messages": "/app/dms",
        "follows": "/app/follows",
        "people": "/app/people",
        "contact points": "/app/me",
        "accounts": "/app/admin/accounts",
        "posters": "/app/admin/posters?team=ops",
        "enrolments": "/app/admin/enrolments",
        "dead letters": "/app/admin/dead-letters",
        "escalation policies": "/app/admin/escalation-policies",
        "new escalation policy": "/app/admin/escalation-policies/new",
        "not found": "/app/no/such/page",
    }
    for name, path in app_pages.items():
        admin.goto(path)
        problems[name] = audit(admin)
    mia = context(color_scheme=scheme).new_page()
    sign_in(mia, data["mia"])
    mia.goto("/app/dms/eve")
    problems["conversation"] = audit(mia)
    mia.goto("/app/dms")
    problems["messages (member)"] = audit(mia)
    mia.goto("/app/people?kind=team")
    problems["people (member)"] = audit(mia)
    mia.goto(f"/app/rollcalls/{data['rollcall']}")
    problems["roll-call report"] = audit(mia)
    eve = context(color_scheme=scheme).new_page()
    sign_in(eve, data["eve"])
    eve.locator(".rollcall-answered summary").click()  # the answer buttons, opened
    problems["home with a roll-call (external)"] = audit(eve)
    mia.goto("/app")
    mia.get_by_label("Text").fill("")
    mia.get_by_label("Text").fill(" ")  # the API refuses blank text: the error state
    mia.get_by_role("button", name="Post").click()
    expect(mia.get_by_role("alert")).to_be_visible()
    problems["home with an error"] = audit(mia)
    assert {name: found for name, found in problems.items() if found} == {}


def test_keyboard_only(web: WebStack, context: ContextFactory) -> None:
    data = content(web)
    page = context().new_page()
    page.goto("/@ops")
    page.keyboard.press("Tab")  # the first stop of every page
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None
    assert box["y"] >= 0, "the focused skip link is off screen"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()

    page.goto("/app/signin")
    expect(page.get_by_label("Your token")).to_be_focused()  # autofocus: type at once
    page.keyboard.type(data["mia"])
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/app$"))

    page.get_by_label("Text").focus()
    page.keyboard.type("Typed and sent with the keyboard")
    for _ in range(10):  # on through the selects to the button
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.tagName") == "BUTTON":
            break
    expect(page.get_by_role("button", name="Post")).to_be_focused()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "the focused button shows no focus ring"
    page.keyboard.press("Enter")
    expect(page.locator("#posts article").first).to_contain_text("Typed and sent with the keyboard")
