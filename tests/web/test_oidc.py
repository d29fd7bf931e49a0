"""Company sign-in (OpenID Connect) in a real browser against a real OpenID provider.

The provider is panva's oidc-provider (npm), run by node on loopback (identity_provider.py);
Muster is the real api + timeline worker (conftest.py) with MUSTER_OIDC_* pointing at it;
Chromium goes through the real login page. Accounts at the provider:

- mia, pat: verified addresses of existing Muster people; newhire: a verified address of
  the allowed domain example.com that no account has (created on first sign-in);
- unverified: an address the provider has not verified; stranger: a verified address of
  another domain that no account has; gone: the address of a deactivated account.

Tokens the provider would never issue (another issuer, a signature by another key, expired,
one replayed from an earlier sign-in) reach the verification through one honest seam:
`RelyingParty.exchange`, the token endpoint call, is wrapped so that the real provider's
answer (to a real login) comes back with its `id_token` replaced by one the test signed —
with the provider's own key (the test generated it and handed it to the provider), except
for the bad-signature case. Everything after that seam is what runs in production.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from redis_server import free_port

from muster import keys
from muster.api.oidc import RelyingParty
from muster.settings import Settings
from web.conftest import ADMIN_TOKEN, ContextFactory, WebStack, needs_browser, shot
from web.identity_provider import IdentityProvider, install, signing_key

needs_browser()  # before Playwright: skips (or in CI fails) without it or Chromium
from playwright.sync_api import BrowserContext, Page, expect  # noqa: E402

COMPANY = "Example Corp"
TOKEN_ENDPOINT_CALL = RelyingParty.exchange
"""The real token endpoint call, as imported: each wrapper below wraps this one, never another."""
PROVIDER_ACCOUNTS = {
    "mia": {"email": "mia@example.com", "email_verified": True, "name": "Mia Kowalski"},
    "pat": {"email": "Pat@Example.com", "email_verified": True, "name": "Pat Ode"},
    "newhire": {"email": "new.hire@example.com", "email_verified": True, "name": "New Hire"},
    "unverified": {"email": "una@example.com", "email_verified": False, "name": "Una"},
    "stranger": {"email": "someone@elsewhere.org", "email_verified": True, "name": "Someone"},
    "gone": {"email": "gone@example.com", "email_verified": True, "name": "Gone"},
}


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdentityProvider]:
    started = IdentityProvider.start(
        install(), tmp_path_factory.mktemp("oidc"), free_port(), PROVIDER_ACCOUNTS
    )
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def web_settings(web_settings: Settings, provider: IdentityProvider) -> Settings:
    """The suite's web settings with company sign-in on (conftest's `web` uses these)."""
    return company_settings(web_settings, provider)


def company_settings(base: Settings, provider: IdentityProvider, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "oidc_issuer": provider.issuer,
        "oidc_client_id": provider.client_id,
        "oidc_client_secret": provider.client_secret,
        "oidc_name": COMPANY,
        "oidc_allowed_domains": ("example.com",),
        **overrides,
    }
    return msgspec.structs.replace(base, **values)


# --- helpers ----------------------------------------------------------------------------------
def log_in_at_provider(page: Page, provider: IdentityProvider, login: str) -> None:
    """From Muster's sign-in page through the provider's own login form."""
    page.goto("/app/signin")
    page.get_by_role("link", name=f"Sign in with {COMPANY}").click()
    page.wait_for_url(f"{provider.issuer}/**")
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password will do")
    page.get_by_role("button", name="Sign-in").click()


def expect_refused(page: Page, status: int, reason: str | re.Pattern[str], seen: list[int]) -> None:
    expect(page.get_by_role("heading", name="Company sign-in did not work")).to_be_visible()
    expect(page.locator("#problem")).to_contain_text(reason)
    expect(page.get_by_role("link", name="Back to sign-in")).to_have_attribute(
        "href", "/app/signin"
    )
    assert seen[-1] == status, seen
    assert not session_cookie(page.context)


def callback_statuses(page: Page) -> list[int]:
    """The status of every /app/oidc/callback answer this page receives, in order."""
    seen: list[int] = []
    page.on(
        "response",
        lambda r: seen.append(r.status) if "/app/oidc/callback" in r.url else None,
    )
    return seen


def session_cookie(context: BrowserContext) -> dict[str, Any] | None:
    return next((dict(c) for c in context.cookies() if c["name"] == "muster_session"), None)


def session_token(context: BrowserContext) -> str:
    cookie = session_cookie(context)
    assert cookie is not None
    encoded = cookie["value"].partition(".")[2]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


def ledger(web: WebStack) -> tuple[list[int], set[bytes], set[bytes]]:
    """What a refusal must leave as it was: the event log's length in each partition (every
    account, token and change is an event), the token keys and the account handles."""
    r = web.redis
    lengths = [int(r.xlen(keys.events(p))) for p in range(web.settings.partitions)]
    tokens = set(r.scan_iter(match=keys.token("*")))
    handles: set[bytes] = set()
    for p in range(web.settings.partitions):
        handles |= set(r.smembers(keys.handles(p)))  # type: ignore[arg-type]
    return lengths, tokens, handles


def swap_id_token(
    monkeypatch: pytest.MonkeyPatch, forge: Callable[[dict[str, Any]], str]
) -> list[dict[str, Any]]:
    """Wrap the token endpoint call: the real answer, its id_token replaced by
    forge(real claims). Returns the real claims seen, for the test to inspect."""
    real = TOKEN_ENDPOINT_CALL
    seen: list[dict[str, Any]] = []

    async def exchange(self: RelyingParty, code: str, verifier: str) -> dict[str, Any]:
        tokens = await real(self, code, verifier)
        claims = dict(jwt.decode(tokens["id_token"], await self.keys()).claims)
        seen.append(claims)
        return {**tokens, "id_token": forge(claims)}

    monkeypatch.setattr(RelyingParty, "exchange", exchange)
    return seen


def signed(claims: dict[str, Any], key: RSAKey) -> str:
    return jwt.encode({"alg": "RS256", "kid": "muster-test"}, claims, key)


# --- the flow -----------------------------------------------------------------------------------
def test_company_sign_in_end_to_end(
    web: WebStack, context: ContextFactory, provider: IdentityProvider
) -> None:
    mia_token = web.person("mia", display_name="Mia Kowalski", email="mia@example.com")
    web.settle()

    # The sign-in page offers company sign-in above the token form, at desktop and phone width.
    phone = context(viewport={"width": 390, "height": 844}, is_mobile=True).new_page()
    phone.goto("/app/signin")
    expect(phone.get_by_role("link", name=f"Sign in with {COMPANY}")).to_be_visible()
    shot(phone, "app-signin-company-phone")

    browser = context(viewport={"width": 1280, "height": 800})
    page = browser.new_page()
    page.goto("/app")
    expect(page).to_have_url(re.compile(r"/app/signin\?next="))
    company = page.get_by_role("link", name=f"Sign in with {COMPANY}")
    expect(company).to_be_visible()
    shot(page, "app-signin-company")

    callbacks: list[str] = []
    page.on("request", lambda r: callbacks.append(r.url) if "/app/oidc/callback" in r.url else None)
    company.click()
    page.wait_for_url(f"{provider.issuer}/**")
    flow = next(c for c in browser.cookies() if c["name"] == "muster_oidc")
    assert flow["httpOnly"]
    assert flow["sameSite"] == "Lax"
    assert flow["path"] == "/app/oidc"
    page.locator("input[name=login]").fill("mia")
    page.locator("input[name=password]").fill("any password will do")
    page.get_by_role("button", name="Sign-in").click()

    # Back at Muster, signed in as mia: her home timeline.
    expect(page).to_have_url(re.compile(r"/app$"))
    expect(page.get_by_role("heading", name="Home")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Sign out @mia"))).to_be_visible()
    cookie = session_cookie(browser)
    assert cookie is not None
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert not any(c["name"] == "muster_oidc" for c in browser.cookies())

    # The session holds a named token of mia's, that expires with the session.
    session = session_token(browser)
    assert session != mia_token
    assert web.ok("GET", "/v1/me", token=session)["handle"] == "mia"
    named = web.ok("GET", "/v1/me/tokens", token=mia_token)
    mine = [t for t in named if t["name"] == "web sign-in via 127.0.0.1"]
    assert len(mine) == 1, named
    assert mine[0]["expires_at"], named

    # The provider's answer works once: replayed, even with the state cookie put back, no.
    assert len(callbacks) == 1
    replay = browser.new_page()
    seen = callback_statuses(replay)
    replay.goto(callbacks[0])
    expect(replay.locator("#problem")).to_contain_text("not started in this browser")
    assert seen == [400]
    state = re.search(r"[?&]state=([^&]+)", callbacks[0])
    assert state is not None
    browser.add_cookies(
        [{"name": "muster_oidc", "value": state.group(1), "url": web.url + "/app/oidc"}]
    )
    replay.goto(callbacks[0])
    expect(replay.locator("#problem")).to_contain_text("already used or has expired")
    assert seen == [400, 400]
    assert web.ok("GET", "/v1/me", token=session)["handle"] == "mia"  # still signed in

    # Sign out: the named token is revoked and the cookie cleared.
    page.get_by_role("button", name=re.compile("Sign out")).click()
    expect(page).to_have_url(re.compile(r"/app/signin\?notice=signedout$"))
    assert session_cookie(browser) is None
    assert web.call("GET", "/v1/me", token=session).status_code == 401
    named = web.ok("GET", "/v1/me/tokens", token=mia_token)
    assert not [t for t in named if t["name"] == "web sign-in via 127.0.0.1"]


def test_a_member_account_is_made_for_an_allowed_domain_and_matched_by_address(
    web: WebStack, context: ContextFactory, provider: IdentityProvider
) -> None:
    web.person("pat", email="pat@example.com")  # the provider says Pat@Example.com
    web.settle()

    pat = context().new_page()
    log_in_at_provider(pat, provider, "pat")
    expect(pat.get_by_role("button", name=re.compile("Sign out @pat"))).to_be_visible()

    before = ledger(web)

    # While another first sign-in of the address is creating its account, this one waits its turn.
    creating = keys.oidc_creating(hashlib.sha256(b"new.hire@example.com").hexdigest())
    web.redis.set(creating, "1", ex=30)
    racing = context().new_page()
    seen = callback_statuses(racing)
    log_in_at_provider(racing, provider, "newhire")
    expect_refused(racing, 409, "Another sign-in is creating the account", seen)
    assert ledger(web) == before
    web.redis.delete(creating)

    hire = context().new_page()
    log_in_at_provider(hire, provider, "newhire")
    expect(hire).to_have_url(re.compile(r"/app$"))
    expect(hire.get_by_role("button", name=re.compile("Sign out @new_hire"))).to_be_visible()
    account = web.ok("GET", "/v1/me", token=session_token(hire.context))
    assert account["handle"] == "new_hire"
    assert account["kind"] == "person"
    assert account["role"] == "member"
    assert account["display_name"] == "New Hire"
    assert account["email"] == "new.hire@example.com"
    assert ledger(web)[2] == before[2] | {b"new_hire"}

    # Next time the same address finds the same account (no second one).
    again = context().new_page()
    log_in_at_provider(again, provider, "newhire")
    expect(again.get_by_role("button", name=re.compile("Sign out @new_hire"))).to_be_visible()
    assert ledger(web)[2] == before[2] | {b"new_hire"}


# --- refusals: each a page with the reason and a way back, nothing created ----------------------
def test_identities_muster_will_not_accept_are_refused(
    web: WebStack, context: ContextFactory, provider: IdentityProvider
) -> None:
    web.person("gone", email="gone@example.com")
    web.ok("PATCH", "/v1/accounts/gone", token=ADMIN_TOKEN, json={"active": False})
    web.settle()
    cases = [
        ("unverified", 403, "has not verified the address una@example.com"),
        ("stranger", 403, "No Muster account has the address someone@elsewhere.org"),
        ("gone", 403, "@gone is deactivated"),
    ]
    for login, status, reason in cases:
        before = ledger(web)
        page = context().new_page()
        seen = callback_statuses(page)
        log_in_at_provider(page, provider, login)
        expect_refused(page, status, reason, seen)
        if login == "unverified":
            shot(page, "app-signin-company-refused")
        assert ledger(web) == before, login


def test_the_providers_refusal_is_shown(
    web: WebStack, context: ContextFactory, provider: IdentityProvider
) -> None:
    before = ledger(web)
    page = context().new_page()
    seen = callback_statuses(page)
    page.goto("/app/signin")
    page.get_by_role("link", name=f"Sign in with {COMPANY}").click()
    page.wait_for_url(f"{provider.issuer}/**")
    page.get_by_role("link", name="[ Cancel ]").click()
    expect_refused(page, 403, "did not sign you in (access_denied", seen)
    assert ledger(web) == before


def test_id_tokens_the_provider_did_not_issue_for_this_sign_in_are_refused(
    web: WebStack,
    context: ContextFactory,
    provider: IdentityProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    web.person("mia", email="mia@example.com")
    web.settle()

    # A genuine sign-in first: its ID token is replayed below.
    kept: list[str] = []

    async def keep(self: RelyingParty, code: str, verifier: str) -> dict[str, Any]:
        tokens = await TOKEN_ENDPOINT_CALL(self, code, verifier)
        kept.append(tokens["id_token"])
        return tokens

    monkeypatch.setattr(RelyingParty, "exchange", keep)
    first = context().new_page()
    log_in_at_provider(first, provider, "mia")
    expect(first.get_by_role("button", name=re.compile("Sign out @mia"))).to_be_visible()
    assert len(kept) == 1

    other_key = signing_key()  # same kid, other key material: only the signature differs
    now = int(time.time())
    cases: list[tuple[str, Callable[[dict[str, Any]], str], str]] = [
        (
            "another issuer",
            lambda c: signed({**c, "iss": "http://127.0.0.1:1"}, provider.key),
            "issued by another provider",
        ),
        (
            "another audience",
            lambda c: signed({**c, "aud": "someone-else", "azp": "someone-else"}, provider.key),
            "issued to another application",
        ),
        (
            "a bad signature",
            lambda c: signed(c, other_key),
            "signature does not match",
        ),
        (
            "expired",
            lambda c: signed({**c, "iat": now - 3600, "exp": now - 600}, provider.key),
            "it has expired",
        ),
        (
            "an ID token replayed from another sign-in (its nonce)",
            lambda c: kept[0],
            "does not belong to this sign-in",
        ),
    ]
    for name, forge, reason in cases:
        swap_id_token(monkeypatch, forge)
        before = ledger(web)
        page = context().new_page()
        seen = callback_statuses(page)
        log_in_at_provider(page, provider, "mia")
        expect_refused(page, 401, reason, seen)
        assert ledger(web) == before, name


def test_a_callback_without_this_browsers_state_is_refused(web: WebStack) -> None:
    before = ledger(web)
    with httpx.Client(base_url=web.url, timeout=10.0) as client:
        missing = client.get("/app/oidc/callback", params={"code": "x"})
        assert missing.status_code == 400
        assert "frame-ancestors 'none'" in missing.headers["content-security-policy"]
        assert missing.headers["cache-control"] == "no-store"
        assert "carries no state" in missing.text
        assert 'href="/app/signin"' in missing.text

        started = client.get("/app/oidc/start")
        assert started.status_code == 303
        assert started.headers["cache-control"] == "no-store"
        assert started.headers["location"].startswith(web.settings.oidc_issuer or "?")
        assert "code_challenge_method=S256" in started.headers["location"]
        cookie = started.cookies["muster_oidc"]
        forged = client.get("/app/oidc/callback", params={"code": "x", "state": "forged-" + cookie})
        assert forged.status_code == 400
        assert "not started in this browser" in forged.text
    assert ledger(web)[0] == before[0]


def test_a_provider_whose_issuer_is_not_the_configured_one_is_not_trusted(
    web_settings: Settings,
    open_web: Callable[[Settings], WebStack],
    provider: IdentityProvider,
) -> None:
    # The provider answers at 127.0.0.1 but calls itself that; configured as localhost, its
    # discovery document names another issuer than MUSTER_OIDC_ISSUER.
    elsewhere = provider.issuer.replace("127.0.0.1", "localhost")
    stack = open_web(company_settings(web_settings, provider, oidc_issuer=elsewhere))
    answer = stack.client.get("/app/oidc/start")
    assert answer.status_code == 502
    assert "says its issuer is" in answer.text
    assert "will not trust it" in answer.text
    assert 'href="/app/signin"' in answer.text


def test_the_sign_in_page_has_no_company_button_when_it_is_off(
    settings: Settings, open_web: Callable[[Settings], WebStack]
) -> None:
    stack = open_web(msgspec.structs.replace(settings, admin_token=ADMIN_TOKEN))
    page = stack.client.get("/app/signin")
    assert page.status_code == 200
    assert "Sign in with" not in page.text
    assert stack.client.get("/app/oidc/start").status_code == 404
