"""Total loss of Redis: an empty Redis plus the archive brings everything back.

The history is made through the API by the real workers; what every person sees is read
through the API, and every projection's checksum taken. Then Redis loses everything
(FLUSHALL on the suite's own server), `replay(from_archive=True)` restores, and the api and
workers start again: old tokens log in, timelines, conversations and audit read as before,
nothing is sent again, new posts flow, and the archive's chains simply continue.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from audit.conftest import ADMIN_TOKEN, OpenSystem, System, archived, running_workers, settle
from audit.scenario import THRESHOLD, make_history
from muster import events, keys, streamids
from muster.connection import text
from muster.ops.replay import ReplayRequest, replay
from muster.ops.verify import verify
from muster.projections import families as projections
from muster.settings import Settings

pytestmark = pytest.mark.anyio

RESTORED = tuple(f for f in projections.ALL if f != "deliveries")


async def views(s: System, tokens: dict[str, str]) -> dict[str, Any]:
    """What every person sees, through the API."""
    seen: dict[str, Any] = {}
    for handle, token in tokens.items():
        refused = await s.call("GET", "/v1/me", token=token)
        if refused.status_code == 401:  # a reset, revoked or deactivated one: refused after too
            seen[handle] = refused.json()
            continue
        if handle == "svc":
            seen[handle] = await s.ok("GET", "/v1/me", token=token)
            continue
        seen[handle] = {
            "me": await s.ok("GET", "/v1/me", token=token),
            "home": await s.ok("GET", "/v1/timelines/home?limit=100", token=token),
            "dms": await s.ok("GET", "/v1/dms", token=token),
            "follows": await s.ok("GET", "/v1/me/follows", token=token),
        }
    seen["ops"] = await s.ok("GET", "/v1/accounts/ops/posts?limit=100", token=ADMIN_TOKEN)
    seen["public"] = await s.ok("GET", "/v1/accounts/ops/posts?limit=100")
    seen["audit"] = await s.ok("GET", "/v1/audit?limit=1000", token=ADMIN_TOKEN)
    return seen


async def backlog(redis: aioredis.Redis, partitions: int) -> int:
    total = 0
    for p in range(partitions):
        for channel in keys.OFFAPP_CHANNELS:
            total += int(await redis.xlen(keys.deliveries(p, channel)))
    return total


@pytest.mark.parametrize(("partitions", "workers"), [(1, 1), (3, 1), (3, 3)])
async def test_empty_redis_and_the_archive_restore_everything(
    audit_settings: Settings,
    open_system: OpenSystem,
    aredis: aioredis.Redis,
    partitions: int,
    workers: int,
) -> None:
    settings = msgspec.structs.replace(
        audit_settings, partitions=partitions, fanout_on_read_threshold=THRESHOLD
    )
    async with open_system(settings) as s:
        tokens = await make_history(s)
        before_views = await views(s, tokens)
        before = await projections.checksum(aredis, partitions, RESTORED)
        log_before = [(entry, e.id) for entry, e in await s.log_events()]

    await aredis.flushall()  # the suite's own server: everything Redis held is gone
    assert await aredis.dbsize() == 0

    request = ReplayRequest(from_archive=True, batch=16, workers=workers)
    result = await replay(aredis, settings, request)
    assert result.restored
    assert result.workers == workers
    assert result.source == "archive"
    assert result.events == len(log_before)
    assert result.projections == list(RESTORED)
    assert await projections.checksum(aredis, partitions, RESTORED) == before
    restored_log = []
    for p in range(partitions):
        entries: Any = await aredis.xrange(keys.events(p))
        restored_log += [(text(i), events.decode(f[b"e"]).id) for i, f in entries]
    assert sorted(restored_log) == sorted(log_before)  # same events under the same entry ids
    assert await backlog(aredis, partitions) == 0  # nothing routed: nothing sent again

    async with open_system(settings) as s:  # the api and workers start on the restored Redis
        await s.settle()
        assert await backlog(aredis, partitions) == 0  # the groups carried on from the end
        assert await views(s, tokens) == before_views
        # Life goes on: a new post reaches its followers, new events join the archive's chains.
        post = await s.post(tokens["pat"], "after the restore", as_="infra")
        await s.dm(tokens["tom"], "pat", "welcome back")
        await s.settle()
        home = [p["id"] for p in await s.ok("GET", "/v1/timelines/home", token=tokens["tom"])]
        assert home[0] == post["id"]
        assert await backlog(aredis, partitions) > 0  # tom's email for the new post (routed once)
        log_after = await s.log_events()
    records = archived(settings.archive_dir)
    ids = [events.decode(bytes(r.event)).id for r in records]
    assert len(ids) == len(set(ids)) == len(log_after)
    assert all(report.intact for report in verify(settings.archive_dir))
    for p in range(partitions):
        head = await aredis.hgetall(keys.archive_head(p))
        if head:
            part = [r for r in records if r.stream == keys.events(p)]
            assert int(head[b"n"]) == len(part)
            assert streamids.parse(text(head[b"entry"])) == max(
                streamids.parse(r.entry) for r in part
            )


async def test_workers_running_through_a_restore_handle_no_history(
    audit_settings: Settings, open_system: OpenSystem, aredis: aioredis.Redis
) -> None:
    async with open_system(audit_settings) as s:
        await make_history(s)
    records = len(archived(audit_settings.archive_dir))
    await aredis.flushall()
    # The workers start first, on the empty Redis (creating their groups), and keep running.
    async with running_workers(audit_settings, ("timeline", "audit")):
        await asyncio.sleep(0.3)
        result = await replay(aredis, audit_settings, ReplayRequest(from_archive=True, batch=8))
        assert result.restored
        await settle(aredis, 1, (keys.GROUP_TIMELINE, keys.GROUP_AUDIT))
        await asyncio.sleep(0.3)  # a few more empty reads
    assert await backlog(aredis, 1) == 0  # the timeline worker routed nothing again
    assert await aredis.xlen(keys.LIVE) == 0  # nor announced history as news
    assert len(archived(audit_settings.archive_dir)) == records  # nor archived it twice
    for group in keys.EVENT_LOG_GROUPS:
        groups: Any = await aredis.xinfo_groups(keys.events(0))
        found = {text(g["name"]): g for g in groups}
        assert int(found[group]["pending"]) == 0
        stream: Any = await aredis.xinfo_stream(keys.events(0))
        assert found[group]["last-delivered-id"] == stream["last-generated-id"]


async def test_a_restore_refuses_a_since(
    audit_settings: Settings, open_system: OpenSystem, aredis: aioredis.Redis
) -> None:
    from muster.ops.replay import ReplayError

    async with open_system(audit_settings) as s:
        await s.person("pat")
        await s.settle()
    await aredis.flushall()
    with pytest.raises(ReplayError, match="leave out --since"):
        await replay(aredis, audit_settings, ReplayRequest(from_archive=True, since="1"))
    assert await aredis.dbsize() == 0
