"""Backpressure: past MUSTER_MAX_LAG unread or unacknowledged entries, non-critical writes get
429 with Retry-After and write nothing; critical posts are always accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from api.conftest import TEAM, Api, Cast, OpenApi, assert_error
from muster import events, keys
from muster.settings import Settings

pytestmark = pytest.mark.anyio

MAX_LAG = 5


@pytest.fixture
async def api(api_settings: Settings, open_api: OpenApi) -> AsyncIterator[Api]:
    async with open_api(msgspec.structs.replace(api_settings, max_lag=MAX_LAG)) as opened:
        yield opened


async def create_groups(api: Api) -> None:
    """The event-log groups as the workers create them (at the start, consumer.ensure_group),
    caught up with what is already there: what is appended next is their lag."""
    for p in range(api.settings.partitions):
        for group in keys.EVENT_LOG_GROUPS:
            await api.redis.xgroup_create(keys.events(p), group, id="0", mkstream=True)
    await catch_up(api)
    assert not api.state.lag.overloaded
    assert api.state.lag.worst == 0


async def fall_behind(api: Api, cast: Cast, entries: int) -> None:
    for i in range(entries):
        response = await api.call("POST", "/v1/posts", token=cast.member, json={"text": f"{i}"})
        assert response.status_code == 202, response.text
    await api.state.lag.refresh()


async def catch_up(api: Api) -> None:
    """What the workers do: read everything and acknowledge it."""
    for p in range(api.settings.partitions):
        stream = keys.events(p)
        for group in keys.EVENT_LOG_GROUPS:
            read: Any = await api.redis.xreadgroup(group, "worker", {stream: ">"}, count=10_000)
            ids = [entry_id for _, entries in read for entry_id, _ in entries]
            if ids:
                await api.redis.xack(stream, group, *ids)
    await api.state.lag.refresh()


REFUSED = [
    pytest.param("POST", "/v1/posts", {"text": "later"}, id="post-info"),
    pytest.param("POST", "/v1/posts", {"text": "later", "severity": "warning"}, id="post-warning"),
    pytest.param("POST", "/v1/dms", {"to": "eve", "text": "later"}, id="dm"),
    pytest.param("PUT", f"/v1/me/follows/{TEAM}", None, id="follow"),
]


async def test_below_the_limit_writes_are_accepted(api: Api, cast: Cast) -> None:
    await create_groups(api)
    await fall_behind(api, cast, MAX_LAG)  # exactly at the limit: not over it
    assert not api.state.lag.overloaded
    response = await api.call("POST", "/v1/posts", token=cast.member, json={"text": "ok"})
    assert response.status_code == 202


@pytest.mark.parametrize(("method", "path", "body"), REFUSED)
async def test_over_the_limit_non_critical_writes_are_429(
    api: Api, cast: Cast, method: str, path: str, body: dict[str, Any] | None
) -> None:
    await create_groups(api)
    await fall_behind(api, cast, MAX_LAG + 1)
    assert api.state.lag.overloaded
    before = await api.snapshot()
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    response = await api.call(method, path, token=cast.member, **kwargs)
    error = assert_error(response, 429)
    assert error["code"] == "backpressure" or path.startswith("/v1/me/follows")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert await api.snapshot() == before


async def test_critical_posts_are_always_accepted(api: Api, cast: Cast) -> None:
    await create_groups(api)
    await fall_behind(api, cast, MAX_LAG * 3)
    assert api.state.lag.overloaded
    before = await api.log_length()
    for token in (cast.member, cast.service, cast.external):
        response = await api.call(
            "POST",
            "/v1/posts",
            token=token,
            json={"text": "Evacuate building B", "severity": "critical", "visibility": "public"},
        )
        assert response.status_code == 202, response.text
    assert await api.log_length() == before + 3
    published = (await api.events())[-1]
    assert isinstance(published, events.PostPublished)
    assert published.severity == "critical"


async def test_retry_after_grows_with_the_lag(api: Api, cast: Cast) -> None:
    await create_groups(api)
    await fall_behind(api, cast, MAX_LAG + 1)
    small = int(
        (await api.call("POST", "/v1/posts", token=cast.member, json={"text": "x"})).headers[
            "Retry-After"
        ]
    )
    for _ in range(MAX_LAG * 4):
        await api.call(
            "POST", "/v1/posts", token=cast.member, json={"text": "!", "severity": "critical"}
        )
    await api.state.lag.refresh()
    large = int(
        (await api.call("POST", "/v1/posts", token=cast.member, json={"text": "x"})).headers[
            "Retry-After"
        ]
    )
    assert large > small


async def test_pending_unacknowledged_entries_count_too(api: Api, cast: Cast) -> None:
    await create_groups(api)
    await fall_behind(api, cast, MAX_LAG + 1)
    # a worker read everything but acknowledged nothing (it crashed mid-batch)
    for group in keys.EVENT_LOG_GROUPS:
        await api.redis.xreadgroup(group, "crashed", {keys.events(0): ">"}, count=10_000)
    await api.state.lag.refresh()
    assert api.state.lag.overloaded
    assert_error(await api.call("POST", "/v1/posts", token=cast.member, json={"text": "x"}), 429)


async def test_writes_resume_when_the_workers_catch_up(api: Api, cast: Cast) -> None:
    await create_groups(api)
    await fall_behind(api, cast, MAX_LAG + 1)
    assert_error(await api.call("POST", "/v1/posts", token=cast.member, json={"text": "x"}), 429)
    await catch_up(api)
    assert not api.state.lag.overloaded
    response = await api.call("POST", "/v1/posts", token=cast.member, json={"text": "x"})
    assert response.status_code == 202


async def test_the_monitor_refreshes_by_itself(api: Api, cast: Cast) -> None:
    """No explicit refresh: the background task notices within its interval (1 s)."""
    import asyncio

    await create_groups(api)
    for i in range(MAX_LAG + 1):
        await api.call("POST", "/v1/posts", token=cast.member, json={"text": f"{i}"})
    async with asyncio.timeout(5):
        while not api.state.lag.overloaded:  # noqa: ASYNC110 - polling the monitor is the point
            await asyncio.sleep(0.05)
    assert_error(
        await api.call("POST", "/v1/dms", token=cast.member, json={"to": "eve", "text": "x"}), 429
    )
