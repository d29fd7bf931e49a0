"""Who may call what: every route, as admin, member, external, service and no token at all.

A team has no token of its own (test_accounts checks none exists), so the only way to call
"as a team" is without one: the `none` column. A refused call writes nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from api.conftest import TEAM, Api, Cast, assert_error

pytestmark = pytest.mark.anyio

WHO = ("admin", "member", "external", "service", "none")

MEMBERS_ONLY = {"admin": 200, "member": 200, "external": 200, "service": 403, "none": 401}
ADMIN_ONLY = {"member": 403, "external": 403, "service": 403, "none": 401}
ANY_TOKEN = {**dict.fromkeys(WHO, 200), "none": 401}
NO_SUCH = {**dict.fromkeys(WHO, 404), "none": 401}
NO_ROLLCALL = "117738252631212096"

# (method, route) → (concrete path, body or None, {who: status}).
# In a body, `{who}` is the caller's role and `{peer}` someone they can message.
MATRIX: dict[tuple[str, str], tuple[str, Any, dict[str, int]]] = {
    ("POST", "/v1/accounts"): (
        "/v1/accounts",
        {"handle": "new_{who}", "kind": "person"},
        {"admin": 201, **ADMIN_ONLY},
    ),
    ("GET", "/v1/accounts/{handle}"): ("/v1/accounts/mia", None, dict.fromkeys(WHO, 200)),
    # a provider's webhook: no token counts, only Mailgun's signature (tests/delivery/
    # test_mail_in.py); with inbound mail off (no MUSTER_MAIL_IN_SECRET) nobody gets in
    ("POST", "/v1/inbound/email/mailgun/mime"): (
        "/v1/inbound/email/mailgun/mime",
        None,
        dict.fromkeys(WHO, 404),
    ),
    ("GET", "/v1/me"): ("/v1/me", None, ANY_TOKEN),
    ("PATCH", "/v1/me"): ("/v1/me", {"display_name": "Renamed"}, ANY_TOKEN),
    ("PUT", "/v1/accounts/{team}/posters/{handle}"): (
        f"/v1/accounts/{TEAM}/posters/mia",
        None,
        {"admin": 204, **ADMIN_ONLY},
    ),
    ("DELETE", "/v1/accounts/{team}/posters/{handle}"): (
        f"/v1/accounts/{TEAM}/posters/mia",
        None,
        {"admin": 204, **ADMIN_ONLY},
    ),
    ("PATCH", "/v1/accounts/{handle}"): (
        "/v1/accounts/mia",
        {"active": True},
        {"admin": 200, **ADMIN_ONLY},
    ),
    ("POST", "/v1/accounts/{handle}/token"): (
        "/v1/accounts/mia/token",
        None,
        {"admin": 200, **ADMIN_ONLY},
    ),
    ("POST", "/v1/me/tokens"): (
        "/v1/me/tokens",
        {"name": "script of {who}"},
        {**MEMBERS_ONLY, "admin": 201, "member": 201, "external": 201},
    ),
    ("GET", "/v1/me/tokens"): ("/v1/me/tokens", None, MEMBERS_ONLY),
    ("GET", "/v1/directory"): ("/v1/directory", None, MEMBERS_ONLY),  # externals: teams only
    ("DELETE", "/v1/me/tokens/{token_id}"): (
        "/v1/me/tokens/123",
        None,
        {**MEMBERS_ONLY, "admin": 404, "member": 404, "external": 404},
    ),
    ("PUT", "/v1/me/follows/{handle}"): (f"/v1/me/follows/{TEAM}", None, MEMBERS_ONLY),
    ("GET", "/v1/me/follows"): ("/v1/me/follows", None, MEMBERS_ONLY),
    ("DELETE", "/v1/me/follows/{handle}"): (
        f"/v1/me/follows/{TEAM}",
        None,
        {**MEMBERS_ONLY, "admin": 204, "member": 204, "external": 204},
    ),
    ("PUT", "/v1/accounts/{handle}/enrolments"): (
        f"/v1/accounts/{TEAM}/enrolments",
        {"followers": ["mia"]},
        {"admin": 202, **ADMIN_ONLY},
    ),
    ("POST", "/v1/posts"): (
        "/v1/posts",
        {"text": "hello", "visibility": "public"},
        {**dict.fromkeys(WHO, 202), "none": 401},
    ),
    ("POST", "/v1/dms"): (
        "/v1/dms",
        {"to": "{peer}", "text": "hi"},
        {**dict.fromkeys(WHO, 202), "none": 401},
    ),
    ("PUT", "/v1/accounts/{handle}/components/{name}"): (
        f"/v1/accounts/{TEAM}/components/API",
        {"status": "operational"},
        {"admin": 200, **ADMIN_ONLY},  # and the team's posters (test_incidents.py)
    ),
    ("GET", "/v1/accounts/{handle}/components"): (
        f"/v1/accounts/{TEAM}/components",
        None,
        dict.fromkeys(WHO, 200),
    ),
    ("POST", "/v1/incidents"): (  # only the team's posters (none here) and services as themselves
        "/v1/incidents",
        {"title": "t", "status": "investigating", "impact": "none", "text": "x"},
        {"admin": 422, "member": 422, "external": 422, "service": 201, "none": 401},
    ),
    ("GET", "/v1/accounts/{handle}/incidents"): (
        f"/v1/accounts/{TEAM}/incidents",
        None,
        dict.fromkeys(WHO, 200),
    ),
    ("POST", "/v1/accounts/{handle}/subscriptions"): (  # anyone, with or without a token
        f"/v1/accounts/{TEAM}/subscriptions",
        {"email": "kim@example.com"},
        dict.fromkeys(WHO, 202),
    ),
    ("DELETE", "/v1/accounts/{handle}/subscriptions/{subscription_id}"): (
        f"/v1/accounts/{TEAM}/subscriptions/0123456789abcdef0123",
        None,
        {"admin": 404, "member": 403, "external": 403, "service": 403, "none": 401},
    ),
    ("GET", "/v1/timelines/home"): ("/v1/timelines/home", None, MEMBERS_ONLY),
    ("GET", "/v1/dms"): ("/v1/dms", None, MEMBERS_ONLY),
    # roll-calls: no worker projects a post here, so none exists: 404 to every token, 401 first
    **{
        (method, f"/v1/rollcalls/{{rollcall_id}}{tail}"): (
            f"/v1/rollcalls/{NO_ROLLCALL}{tail.replace('{handle}', 'mia')}",
            body,
            NO_SUCH,
        )
        for method, tail, body in (
            ("POST", "/responses", {"option": "1"}),
            ("PUT", "/responses/{handle}", {"option": "1"}),
            ("POST", "/help/{handle}/handled", {}),
            ("GET", "", None),
            ("GET", "/recipients", None),
            ("GET", "/export", None),
            ("POST", "/close", None),
            ("POST", "/extend", {"deadline": "2030-01-01T00:00:00Z"}),
        )
    },
    # a webhook recipient's answer: its signature authenticates, a bearer token changes
    # nothing; a callback URL nobody was sent is 404 to everyone
    ("POST", "/v1/rollcalls/callback/{link}"): (
        "/v1/rollcalls/callback/AAAAAAAAAAAAAAAA",
        {"option": "1"},
        dict.fromkeys(WHO, 404),
    ),
    ("GET", "/healthz"): ("/healthz", None, dict.fromkeys(WHO, 200)),
    ("GET", "/openapi.json"): ("/openapi.json", None, dict.fromkeys(WHO, 200)),
    # no worker has created its consumer groups here: not ready, whoever asks
    ("GET", "/readyz"): ("/readyz", None, dict.fromkeys(WHO, 503)),
}

HANDLES = {"admin": "admin", "member": "mia", "external": "eve", "service": "svc", "none": ""}

CASES = [
    pytest.param(method, route, who, id=f"{method} {route} as {who}")
    for (method, route) in MATRIX
    for who in WHO
]


def fill(value: Any, who: str) -> Any:
    peer = "mia" if who == "external" else "eve"
    if isinstance(value, str):
        return value.replace("{who}", who).replace("{peer}", peer)
    if isinstance(value, dict):
        return {k: fill(v, who) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, who) for v in value]
    return value


@pytest.mark.parametrize(("method", "route", "who"), CASES)
async def test_authorisation(api: Api, cast: Cast, method: str, route: str, who: str) -> None:
    path, body, expected = MATRIX[(method, route)]
    if method == "DELETE" and "/posters/" in path:
        await api.call("PUT", path, token=cast.admin)  # something to revoke
    if method == "DELETE" and "/follows/" in path and who != "service":
        await api.call("PUT", path, token=cast.by_name(who))  # something to unfollow
    kwargs: dict[str, Any] = {} if body is None else {"json": fill(body, who)}
    before = await api.snapshot()
    response = await api.call(method, path, token=cast.by_name(who), **kwargs)
    status = expected[who]
    assert response.status_code == status, response.text
    if 400 <= status < 500:
        error = assert_error(response, status)
        if status == 401:
            assert error["code"] == "missing_token"
        assert await api.snapshot() == before


async def test_every_route_of_the_contract_is_in_the_matrix(api: Api) -> None:
    document = (await api.call("GET", "/openapi.json")).json()
    contract = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    covered = {key for key in MATRIX if key[1] != "/openapi.json"}
    assert covered <= contract, covered - contract
    sections = ("/v1/accounts", "/v1/me", "/v1/posts", "/v1/dms", "/v1/rollcalls")
    writes = {(m, p) for (m, p) in contract if m != "GET" and p.startswith(sections)}
    assert writes <= set(MATRIX), writes - set(MATRIX)


@pytest.mark.parametrize("who", ["admin", "member", "external", "service"])
async def test_a_token_acts_as_its_own_account(api: Api, cast: Cast, who: str) -> None:
    me = (await api.call("GET", "/v1/me", token=cast.by_name(who))).json()
    assert me["handle"] == HANDLES[who]
    published = await api.call(
        "POST", "/v1/posts", token=cast.by_name(who), json={"text": "x", "visibility": "public"}
    )
    assert published.json()["author"] == HANDLES[who]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Token {token}",
        "{token}",
        "Bearer {token}x",
        "Bearer x{token}",
        "bearer mst_",
    ],
)
async def test_malformed_or_altered_tokens_are_401(api: Api, cast: Cast, header: str) -> None:
    response = await api.client.get(
        "/v1/me", headers={"Authorization": header.format(token=cast.member)}
    )
    assert_error(response, 401)


async def test_the_scheme_is_case_insensitive(api: Api, cast: Cast) -> None:
    response = await api.client.get("/v1/me", headers={"Authorization": f"bearer {cast.member}"})
    assert response.status_code == 200
