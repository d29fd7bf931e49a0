"""The status page and its Statuspage JSON as a cache sees them: validators, 304 on a
conditional GET, a short max-age with stale-while-revalidate, and one rendering per change
of the account's status, not one per request.
"""

from __future__ import annotations

import pytest

from api.conftest import ADMIN_TOKEN, TEAM, Api, Cast

pytestmark = pytest.mark.anyio

PAGES = ["/@ops", "/@ops/banner", "/@ops/api/v2/summary.json", "/@ops/feed.atom", "/@ops/feed.rss"]


async def incident(api: Api, cast: Cast) -> str:
    await api.ok("PUT", f"/v1/accounts/{TEAM}/posters/mia", 204, token=ADMIN_TOKEN)
    body = {"as": TEAM, "title": "Checkout failing", "status": "investigating", "impact": "major",
            "text": "Looking into it."}  # fmt: skip
    found: str = (await api.ok("POST", "/v1/incidents", 201, token=cast.member, json=body))["id"]
    return found


@pytest.mark.parametrize("path", PAGES)
async def test_validators_304_and_one_rendering_per_change(api: Api, cast: Cast, path: str) -> None:
    iid = await incident(api, cast)
    first = await api.call("GET", path)
    assert first.status_code == 200
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    cache = first.headers["cache-control"]
    assert cache.startswith("public, max-age=")
    assert "stale-while-revalidate=" in cache
    pages = api.app.state.pages
    before = pages.renders
    for _ in range(20):
        again = await api.call("GET", path)
        assert again.status_code == 200
        assert again.headers["etag"] == etag
        assert again.content == first.content
    assert pages.renders == before  # answered from the one rendering, twenty times
    for conditional in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
        unchanged = await api.call("GET", path, headers=conditional)
        assert unchanged.status_code == 304
        assert unchanged.headers["etag"] == etag
        assert unchanged.content == b""
    await api.ok(
        "POST",
        f"/v1/incidents/{iid}/updates",
        202,
        token=cast.member,
        json={"status": "monitoring", "text": "Rolled back; watching."},
    )
    changed = await api.call("GET", path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert "Rolled back; watching." in changed.text or "monitoring" in changed.text
    assert pages.renders == before + 1


async def test_unknown_accounts_are_404_and_never_cached(api: Api) -> None:
    for path in PAGES:
        missing = await api.call("GET", path.replace("ops", "nobody"))
        assert missing.status_code == 404
        assert "etag" not in missing.headers
