"""The web app's look, kept as screenshots, and the layout checks screenshots cannot make.

Every main page is shot at desktop width (1280 px) and phone width (390 px) into
tests/artifacts/screen-<page>-<desktop|phone>.png (the README picks its pictures from
there). At both widths, no element of the page may stick out of the viewport sideways (the
page would scroll horizontally; what scrolls inside its own box, like a wide table, is
fine), and no button, link-button or select may clip its text.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from web.conftest import ADMIN_TOKEN, ContextFactory, WebStack, needs_browser, shot, sign_in

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import Page  # noqa: E402

WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}

LAYOUT = """
() => {
  const problems = [];
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > width) {
    problems.push(`the page scrolls sideways: ${document.documentElement.scrollWidth} > ${width}`);
  }
  const scrolls = (el) => {
    for (let e = el.parentElement; e; e = e.parentElement) {
      const o = getComputedStyle(e).overflowX;
      if (o === 'auto' || o === 'scroll') return true;
    }
    return false;
  };
  const shown = (el) => !!(el.offsetWidth || el.offsetHeight)
    && !el.closest('.visually-hidden, [hidden], template, .skip');
  const present = (el) => !el.closest('[hidden], template');
  const name = (el) => (el.textContent || el.value || '').trim().replace(/\\s+/g, ' ').slice(0, 50)
    || el.outerHTML.slice(0, 60);
  for (const el of document.querySelectorAll('body *')) {
    if (!present(el) || scrolls(el)) continue;  // hidden labels too: they can widen a page
    const box = el.getBoundingClientRect();
    const inside = box.width <= 1 ? box.left >= -1 && box.left <= width : box.left >= -0.5 && box.right <= width + 0.5;
    if (!inside) {
      problems.push(`${el.tagName.toLowerCase()} "${name(el)}" sticks out: ${box.left}..${box.right} of ${width}`);
    }
  }
  for (const el of document.querySelectorAll('button, a.button-link, input[type=submit]')) {
    if (!shown(el)) continue;
    if (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1) {
      problems.push(`button "${name(el)}" clips its text`);
    }
  }
  const ruler = document.createElement('span');
  ruler.style.position = 'absolute';
  ruler.style.visibility = 'hidden';
  ruler.style.whiteSpace = 'pre';
  document.body.appendChild(ruler);
  for (const el of document.querySelectorAll('select')) {
    if (!shown(el)) continue;
    const style = getComputedStyle(el);
    ruler.style.font = style.font;
    ruler.textContent = el.options[el.selectedIndex] ? el.options[el.selectedIndex].text : '';
    const room = el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 20;
    if (ruler.offsetWidth > room) {
      problems.push(`select "${ruler.textContent}" is clipped (${ruler.offsetWidth} > ${room})`);
    }
  }
  ruler.remove();
  return problems;
}
"""


def story(web: WebStack) -> dict[str, Any]:
    """A small organisation mid-incident: a team, a service, people with display names."""
    tokens = {
        "mia": web.person("mia", display_name="Mia Wong", email="mia@example.com"),
        "pat": web.person("pat", display_name="Pat Okafor"),
        "lena": web.person("lena", display_name="Lena Fischer"),
        "eve": web.person("eve", "external", display_name="Eve Santos (Acme Corp)"),
    }
    web.team("ops", "mia", "pat", display_name="Ops at Example")
    web.team("payments", "pat", display_name="Payments")
    web.ok(
        "POST",
        "/v1/accounts",
        201,
        token=ADMIN_TOKEN,
        json={"handle": "deploybot", "kind": "service", "display_name": "Deploy bot"},
    )
    for who in ("mia", "pat", "lena", "eve"):
        web.follow(tokens[who], "ops")
    web.follow(tokens["mia"], "payments")
    web.follow(tokens["mia"], "pat")
    web.settle()
    web.post(tokens["pat"], "Scheduled maintenance of the payments database on Sunday 02:00 UTC.",
             as_="payments", visibility="public")  # fmt: skip
    web.post(tokens["lena"], "Heads-up: the VPN gateway in Zurich is flaky, use Frankfurt.")
    web.settle()
    incident = web.post(
        tokens["mia"],
        "Checkout is failing for some customers. We are investigating.",
        as_="ops",
        visibility="public",
        severity="critical",
    )
    web.settle()
    web.post(tokens["pat"], "Root cause: an expired certificate on the card gateway.",
             as_="ops", in_reply_to=incident["id"], severity="warning")  # fmt: skip
    web.post(tokens["mia"], "A fix is rolling out; error rates are falling.", as_="ops",
             visibility="public", in_reply_to=incident["id"])  # fmt: skip
    web.settle()
    web.dm(tokens["mia"], "eve", "Hi Eve, could you send us a trace id of a failed checkout?")
    web.dm(tokens["eve"], "mia", "Sure: trace 4f2a-99c1, at 14:02 UTC.")
    web.dm(tokens["pat"], "mia", "Cert renewed, can you confirm on your side?")
    web.settle()
    return {**tokens, "incident": incident["id"]}


def check(page: Page, name: str, problems: dict[str, list[str]]) -> None:
    page.wait_for_load_state("load")
    found: list[str] = page.evaluate(LAYOUT)
    if found:
        problems[name] = found


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_main_pages_screenshots_and_layout(
    web: WebStack, context: ContextFactory, device: str
) -> None:
    data = story(web)
    viewport = WIDTHS[device]
    problems: dict[str, list[str]] = {}

    anonymous = context(viewport=viewport).new_page()
    anonymous.goto("/app/signin")
    check(anonymous, "signin", problems)
    shot(anonymous, f"screen-signin-{device}")
    anonymous.goto("/@ops")
    check(anonymous, "status", problems)
    shot(anonymous, f"screen-status-{device}")
    anonymous.goto(f"/@ops/posts/{data['incident']}")
    check(anonymous, "status thread", problems)
    shot(anonymous, f"screen-status-thread-{device}")

    mia = context(viewport=viewport).new_page()
    sign_in(mia, data["mia"])
    pages = {
        "home": "/app",
        "thread": f"/app/posts/{data['incident']}",
        "dms": "/app/dms",
        "conversation": "/app/dms/eve",
        "follows": "/app/follows",
        "people": "/app/people",
        "contact-points": "/app/me",
        "incident-desk": "/app/incidents/ops",
    }
    for name, path in pages.items():
        mia.goto(path)
        check(mia, name, problems)
        shot(mia, f"screen-{name}-{device}")

    admin = context(viewport=viewport).new_page()
    sign_in(admin, ADMIN_TOKEN)
    admin.goto("/app/admin/accounts")
    check(admin, "admin accounts", problems)
    shot(admin, f"screen-admin-accounts-{device}")
    policy = {
        "steps": [
            {"after_s": 600, "to": "recipient", "channels": "chosen"},
            {"after_s": 1800, "to": "manager", "channels": ["email", "sms", "webhook"]},
            {"after_s": 3600, "to": "fallback", "channels": "all", "fallback": "mia"},
        ],
        "repeat": {"times": 2, "every_s": 900},
        "max_sends_per_recipient": 5,
    }
    web.ok("PUT", "/v1/escalation-policies/building-evacuation", token=ADMIN_TOKEN, json=policy)
    for name, path in (
        ("admin-policies", "/app/admin/escalation-policies"),
        ("admin-policy", "/app/admin/escalation-policies/building-evacuation"),
    ):
        admin.goto(path)
        check(admin, name, problems)
        shot(admin, f"screen-{name}-{device}")
    admin.goto(f"/app/posts/{data['incident']}/deliveries")
    check(admin, "deliveries", problems)
    assert problems == {}


@pytest.mark.parametrize("device", ["desktop", "phone"])
def test_rollcall_pages_screenshots_and_layout(
    web: WebStack, context: ContextFactory, device: str
) -> None:
    """A roll-call under way: the buttons in a timeline, an answer given, the report page."""
    data = story(web)
    web.follow(data["lena"], "payments")  # a team besides the roll-call's: "By team"
    web.follow(data["pat"], "payments")
    deadline = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    options = [
        {"key": "safe", "label": "Safe", "kind": "ok"},
        {"key": "help", "label": "Need help", "kind": "help"},
        {"key": "away", "label": "Not on site", "kind": "other"},
    ]
    rc = web.post(data["mia"], "Fire alarm in building A: everyone out. Are you safe?",
                  as_="ops", severity="critical",
                  rollcall={"options": options, "deadline": deadline})["id"]  # fmt: skip
    web.settle()
    answer = f"/v1/rollcalls/{rc}/responses"
    web.ok("POST", answer, token=data["pat"], json={"option": "help",
           "note": "Stuck in the lift between floors 2 and 3, two of us, we are fine for now."})  # fmt: skip
    viewport = WIDTHS[device]
    problems: dict[str, list[str]] = {}
    for who, name in (("lena", "rollcall-ask"), ("pat", "rollcall-answered")):
        page = context(viewport=viewport).new_page()
        sign_in(page, data[who])
        check(page, name, problems)
        page.locator(".rollcall").first.scroll_into_view_if_needed()
        shot(page, f"screen-{name}-{device}", full_page=False)
    pat = page
    pat.locator(".rollcall-answered summary").first.click()
    check(pat, "rollcall-change", problems)
    mia = context(viewport=viewport).new_page()
    sign_in(mia, data["mia"])
    mia.goto(f"/app/rollcalls/{rc}")
    check(mia, "rollcall-report", problems)
    shot(mia, f"screen-rollcall-report-{device}")
    assert problems == {}
