"""What the web layer adds to the JSON API, over real HTTP (no browser): the public account
stream (SSE) with its resume rules, the admin listings, the OpenAPI document, and the web
layer's edges (HTML 404s, static files, a delivery report when that route is missing).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from muster.api.web import timeline
from web.conftest import ADMIN_TOKEN, WebStack

Event = dict[str, Any]


def sse_events(response: httpx.Response) -> Iterator[Event]:
    """Parse a text/event-stream into {id, event, data} dicts (comments and retry skipped)."""
    current: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "event" in current or "data" in current:
                data = current.get("data")
                yield {
                    "id": current.get("id"),
                    "event": current.get("event", "message"),
                    "data": msgspec.json.decode(data) if data else None,
                }
            current = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        current[name] = value.removeprefix(" ")


def take_posts(stream: Iterator[Event], count: int) -> list[Event]:
    found = []
    for event in stream:
        if event["event"] == "post":
            found.append(event)
            if len(found) == count:
                return found
    raise AssertionError(f"the stream ended after {found}")


def world(web: WebStack) -> dict[str, str]:
    tokens = {"pat": web.person("pat"), "mia": web.person("mia")}
    web.team("ops", "pat")
    web.team("sales", "pat")
    web.settle()
    return tokens


def test_account_stream_carries_that_accounts_public_posts_only(web: WebStack) -> None:
    tokens = world(web)
    with web.client.stream("GET", "/v1/accounts/ops/stream", timeout=10.0) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        web.post(tokens["pat"], "internal ops", as_="ops")
        web.post(tokens["pat"], "public sales", as_="sales", visibility="public")
        web.dm(tokens["pat"], "mia", "a dm")
        web.post(tokens["pat"], "public pat", visibility="public")
        web.post(tokens["pat"], "public ops", as_="ops", visibility="public")
        (only,) = take_posts(sse_events(response), 1)
    assert only["data"]["text"] == "public ops"
    assert only["data"]["as_account"] == "ops"
    assert only["data"]["visibility"] == "public"
    assert re.fullmatch(r"[0-9]+-[0-9]+", only["id"])


def test_account_stream_resumes_after_an_id_without_gap_or_repeat(web: WebStack) -> None:
    tokens = world(web)
    with web.client.stream("GET", "/v1/accounts/ops/stream", timeout=10.0) as response:
        web.post(tokens["pat"], "one", as_="ops", visibility="public")
        (first,) = take_posts(sse_events(response), 1)
    # while nobody listens
    web.post(tokens["pat"], "two", as_="ops", visibility="public")
    web.post(tokens["pat"], "secret", as_="ops")
    web.post(tokens["pat"], "three", as_="ops", visibility="public")
    web.settle()

    def resume(**how: Any) -> tuple[list[str], str, str]:
        """Texts replayed after `first`, then one live post's text and event id."""
        with web.client.stream("GET", "/v1/accounts/ops/stream", timeout=10.0, **how) as response:
            stream = sse_events(response)
            replayed = take_posts(stream, 3 if "params" in how else 2)
            web.post(tokens["pat"], f"live {len(replayed)}", as_="ops", visibility="public")
            (live,) = take_posts(stream, 1)
        return [e["data"]["text"] for e in replayed], live["data"]["text"], live["id"]

    replayed, live, _ = resume(headers={"Last-Event-ID": first["id"]})
    assert (replayed, live) == (["two", "three"], "live 2")
    replayed, live, last_id = resume(params={"after": first["id"]})  # as a page's script does
    assert (replayed, live) == (["two", "three", "live 2"], "live 3")
    # the header wins over `after` (a browser reconnecting keeps the URL it started with)
    with web.client.stream(
        "GET",
        "/v1/accounts/ops/stream",
        params={"after": "0-0"},
        headers={"Last-Event-ID": last_id},
        timeout=10.0,
    ) as response:
        web.post(tokens["pat"], "five", as_="ops", visibility="public")
        (next_,) = take_posts(sse_events(response), 1)
    assert next_["data"]["text"] == "five"


def test_account_stream_refusals(web: WebStack) -> None:
    world(web)
    missing = web.call("GET", "/v1/accounts/nobody/stream")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "no_such_account"
    bad = web.client.get("/v1/accounts/ops/stream", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_last_event_id"
    assert web.client.get("/v1/accounts/ops/stream", params={"after": "x"}).status_code == 422


def test_admin_lists_accounts_by_handle_with_paging(web: WebStack) -> None:
    tokens = world(web)
    for handle in ("zed", "bob", "amy"):
        web.person(handle, "external")
    everyone = ["admin", "amy", "bob", "mia", "ops", "pat", "sales", "zed"]
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": "3", **({"after": after} if after else {})}
        page = web.client.get(
            "/v1/accounts", params=params, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert page.status_code == 200, page.text
        rows = page.json()
        if not rows:
            break
        seen += [row["handle"] for row in rows]
        after = rows[-1]["handle"]
    assert seen == everyone
    amy = web.ok("GET", "/v1/accounts?limit=1&after=admin", token=ADMIN_TOKEN)
    assert amy == [
        {
            "id": amy[0]["id"],
            "handle": "amy",
            "kind": "person",
            "role": "external",
            "display_name": "amy",
            "active": True,
            "manager": None,
        }
    ]
    # Search by handle or display name, and by kind, keeping handle order and the cursor.
    found = web.ok("GET", "/v1/accounts?q=A&kind=person", token=ADMIN_TOKEN)
    assert [row["handle"] for row in found] == ["admin", "amy", "mia", "pat"]
    found = web.ok("GET", "/v1/accounts?q=a&kind=person&after=amy&limit=1", token=ADMIN_TOKEN)
    assert [row["handle"] for row in found] == ["mia"]
    assert web.ok("GET", "/v1/accounts?kind=team", token=ADMIN_TOKEN)[0]["handle"] == "ops"
    assert web.call("GET", "/v1/accounts?kind=robot", token=ADMIN_TOKEN).status_code == 422
    assert web.call("GET", "/v1/accounts", token=tokens["mia"]).status_code == 403
    assert web.call("GET", "/v1/accounts").status_code == 401
    assert (
        web.call("GET", "/v1/accounts?after=NOT%20A%20HANDLE", token=ADMIN_TOKEN).status_code == 422
    )


def test_the_directory_shows_public_fields_to_people_and_only_teams_to_externals(
    web: WebStack,
) -> None:
    tokens = world(web)
    tokens["eve"] = web.person("eve", "external", display_name="Eve Santos", email="e@example.com")
    tokens["aud"] = web.person("aud", "auditor", display_name="Audra")
    web.ok("POST", "/v1/accounts", 201, token=ADMIN_TOKEN,
           json={"handle": "ci", "kind": "service", "display_name": "Deploy bot"})  # fmt: skip
    gone = web.person("gone", display_name="Left the company")
    web.ok("PATCH", "/v1/accounts/gone", token=ADMIN_TOKEN, json={"active": False})

    def handles(token: str, query: str = "") -> list[str]:
        return [row["handle"] for row in web.ok("GET", f"/v1/directory{query}", token=token)]

    # employees (members, auditors) find every active account, with public fields only
    active = ["admin", "aud", "ci", "eve", "mia", "ops", "pat", "sales"]
    assert handles(tokens["mia"]) == active
    assert handles(tokens["aud"]) == active
    eve = web.ok("GET", "/v1/directory?q=santos", token=tokens["mia"])
    assert eve == [
        {
            "id": eve[0]["id"],
            "handle": "eve",
            "kind": "person",
            "display_name": "Eve Santos",
            "active": True,
        }
    ]  # fmt: skip: never a role, an email, a phone or a webhook
    assert handles(tokens["mia"], "?q=DEPLOY") == ["ci"]
    assert handles(tokens["mia"], "?q=@pa") == ["pat"]
    assert handles(tokens["mia"], "?kind=team") == ["ops", "sales"]
    assert handles(tokens["mia"], "?limit=2&after=ci") == ["eve", "mia"]
    # admins also find deactivated accounts, marked so; nobody else does
    assert handles(ADMIN_TOKEN, "?q=gone") == ["gone"]
    assert web.ok("GET", "/v1/directory?q=gone", token=ADMIN_TOKEN)[0]["active"] is False
    assert handles(tokens["mia"], "?q=gone") == []
    # externals find teams and services only: never the list of employees
    assert handles(tokens["eve"]) == ["ci", "ops", "sales"]
    assert handles(tokens["eve"], "?kind=person") == []
    assert handles(tokens["eve"], "?q=mia") == []
    # services may not search it; a deactivated person's token no longer works; no token: 401
    service_token = web.ok("POST", "/v1/accounts/ci/token", token=ADMIN_TOKEN)["token"]
    assert web.call("GET", "/v1/directory", token=service_token).status_code == 403
    assert web.call("GET", "/v1/directory", token=gone).status_code == 401
    assert web.call("GET", "/v1/directory").status_code == 401
    assert web.call("GET", "/v1/directory?kind=robot", token=tokens["mia"]).status_code == 422
    assert web.call("GET", "/v1/directory?limit=0", token=tokens["mia"]).status_code == 422


def test_admin_lists_posters(web: WebStack) -> None:
    tokens = world(web)
    web.ok("PUT", "/v1/accounts/ops/posters/mia", 204, token=ADMIN_TOKEN)
    assert web.ok("GET", "/v1/accounts/ops/posters", token=ADMIN_TOKEN) == {
        "account": "ops",
        "posters": ["mia", "pat"],
    }
    assert web.call("GET", "/v1/accounts/mia/posters", token=ADMIN_TOKEN).status_code == 422
    assert web.call("GET", "/v1/accounts/nope/posters", token=ADMIN_TOKEN).status_code == 404
    assert web.call("GET", "/v1/accounts/ops/posters", token=tokens["pat"]).status_code == 403


def test_openapi_describes_the_new_json_routes_and_no_html(web: WebStack) -> None:
    document = web.ok("GET", "/openapi.json")
    paths = document["paths"]
    stream = paths["/v1/accounts/{handle}/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert {p["name"] for p in stream["parameters"]} >= {"handle", "after", "Last-Event-ID"}
    assert "security" not in stream  # anyone may listen
    listing = paths["/v1/accounts"]["get"]
    assert listing["security"] == [{"bearer": []}]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/AccountSummary"},
    }
    assert "AccountSummary" in document["components"]["schemas"]
    assert "PostersOut" in document["components"]["schemas"]
    assert "/v1/accounts/{team}/posters" in paths
    directory = paths["/v1/directory"]["get"]
    assert directory["security"] == [{"bearer": []}]
    assert {p["name"] for p in directory["parameters"]} >= {"q", "kind", "limit", "after"}
    assert "DirectoryEntry" in document["components"]["schemas"]
    html = [p for p in paths if not p.startswith("/v1/") and p not in {"/healthz", "/readyz"}]
    assert html == []


def test_web_edges(web: WebStack, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = world(web)
    for path in ("/app/no/such/page", "/@ops/nothing/here", "/@Not-A-Handle"):
        page = web.client.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    api_404 = web.client.get("/v1/no/such/thing")
    assert api_404.status_code == 404
    assert api_404.json()["error"]["code"] == "not_found"
    assert web.client.get("/", follow_redirects=False).headers["location"] == "/app"

    home = web.client.get("/@ops")
    script = re.search(r'<script src="(/static/muster\.js\?v=[0-9a-f]+)"', home.text)
    assert script is not None
    asset = web.client.get(script[1])
    assert asset.status_code == 200
    assert asset.headers["content-type"].startswith("text/javascript")
    assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert asset.headers["x-content-type-options"] == "nosniff"
    again = web.client.get(script[1], headers={"If-None-Match": asset.headers["etag"]})
    assert again.status_code == 304
    assert web.client.get("/static/muster.js").headers["cache-control"] == "no-cache"
    assert web.client.get("/static/..%2Fhtml.py").status_code == 404
    assert "<script>" not in home.text
    assert " style=" not in home.text.split("<code>")[0]

    # a delivery report page degrades to a notice where the deliveries route does not exist
    post = web.post(tokens["pat"], "report me", as_="ops")
    web.settle()
    session = httpx.Client(base_url=web.url, timeout=10.0, follow_redirects=True)
    try:
        form = session.get("/app/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        signed = session.post("/app/signin", data={"csrf": csrf[1], "token": tokens["pat"]})
        assert signed.status_code == 200
        assert signed.url.path == "/app"
        report = session.get(f"/app/posts/{post['id']}/deliveries")
        assert report.status_code == 200
        assert "<table" in report.text
        monkeypatch.setattr(timeline, "has_route", lambda *_: False)
        degraded = session.get(f"/app/posts/{post['id']}/deliveries")
        assert degraded.status_code == 200
        assert "Delivery reports are not available on this server yet." in degraded.text
        assert "report me" in degraded.text
    finally:
        session.close()


def test_session_cookie_is_secure_behind_https(web: WebStack) -> None:
    """Behind a TLS proxy (X-Forwarded-Proto: https from a trusted address) the cookies are
    Secure; over plain http they cannot be, or the browser would drop them."""
    token = web.person("pat")
    for proto, secure in (("https", True), ("http", False)):
        with httpx.Client(base_url=web.url, timeout=10.0) as client:
            headers = {"X-Forwarded-Proto": proto}
            form = client.get("/app/signin", headers=headers)
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf is not None
            client.cookies.set("muster_signin", form.cookies["muster_signin"])
            signed = client.post(
                "/app/signin", data={"csrf": csrf[1], "token": token}, headers=headers
            )
            assert signed.status_code == 303
            (cookie,) = [
                v for v in signed.headers.get_list("set-cookie") if v.startswith("muster_session=")
            ]
            attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
            assert {"httponly", "samesite=strict", "path=/app"} <= attributes
            assert ("secure" in attributes) is secure, cookie


def test_the_sign_in_page_tells_the_truth_about_tokens(web: WebStack) -> None:
    """A new install's administrator signs in with MUSTER_ADMIN_TOKEN, which need not start
    with mst_: the page says so, and that token signs in."""
    assert not ADMIN_TOKEN.startswith("mst_")
    with httpx.Client(base_url=web.url, timeout=10.0, follow_redirects=True) as session:
        form = session.get("/app/signin")
        assert "MUSTER_ADMIN_TOKEN" in form.text
        assert "it starts with" not in form.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        signed = session.post("/app/signin", data={"csrf": csrf[1], "token": ADMIN_TOKEN})
        assert signed.status_code == 200
        assert signed.url.path == "/app"
