"""/@{handle}/feed.atom and feed.rss, read by feedparser as a feed reader would: well formed,
public posts and public incidents' updates only, newest first, each linking to its page."""

from __future__ import annotations

from typing import Any

import feedparser  # type: ignore[import-untyped]
import pytest

from web.conftest import ADMIN_TOKEN, WebStack


def incident(web: WebStack, token: str, **fields: Any) -> str:
    body = {"as": "ops", "status": "investigating", "impact": "major", **fields}
    found: str = web.ok("POST", "/v1/incidents", 201, token=token, json=body)["id"]
    return found


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_feeds_carry_public_posts_and_incident_updates_only(web: WebStack, kind: str) -> None:
    mia = web.person("mia")
    web.team("ops", "mia", display_name="Ops at Example")
    web.post(mia, "Maintenance window tonight, 22:00 UTC.", as_="ops", visibility="public")
    web.post(mia, "Internal: rotate the on-call pager.", as_="ops", visibility="internal")
    public = incident(web, mia, title="Checkout failing", text="Looking into it.")
    web.ok(
        "POST",
        f"/v1/incidents/{public}/updates",
        202,
        token=mia,
        json={"status": "resolved", "text": "Fixed: a bad deploy rolled back."},
    )
    incident(web, mia, title="Staff VPN flaky", text="Internal only.", visibility="internal")
    web.settle()

    response = web.client.get(f"/@ops/feed.{kind}")
    assert response.status_code == 200
    expected_type = "application/atom+xml" if kind == "atom" else "application/rss+xml"
    assert response.headers["content-type"].startswith(expected_type)
    assert response.headers["etag"]
    parsed = feedparser.parse(response.content)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.version == ("atom10" if kind == "atom" else "rss20")
    assert parsed.feed.title == "Ops at Example status"
    titles = [e.title for e in parsed.entries]
    assert titles == [
        "Checkout failing — Resolved",
        "Checkout failing — Investigating",
        "Maintenance window tonight, 22:00 UTC.",
    ]
    body = response.text
    assert "Internal" not in body
    assert "Staff VPN" not in body
    links = [e.link for e in parsed.entries]
    assert links[0].endswith(f"/@ops/incidents/{public}")
    assert "/@ops/posts/" in links[2]
    assert "Fixed: a bad deploy rolled back." in parsed.entries[0].summary
    assert len({e.id for e in parsed.entries}) == 3


def test_no_feed_for_no_account(web: WebStack) -> None:
    assert web.client.get("/@nobody/feed.atom").status_code == 404
    assert web.ok("GET", "/v1/me", token=ADMIN_TOKEN)["handle"] == "admin"
