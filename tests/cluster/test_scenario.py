"""The replay scenario (audit/scenario.py) on a Redis Cluster reads exactly as on one Redis.

The api and the real timeline and audit workers run in this process, on 8 partitions, first
on the suite's single redis-server, then on a local cluster of 3 masters (each partition's
keys on the master its hash tag's slot falls to). What every person sees through the API —
homes, threads, DMs, follows, account logs, the audit log — must be the same, ids and times
aside (they differ between any two runs); the delivery requests routed must be the same; and
on the cluster a replay must rebuild the very projections the live workers made (checksum),
in one process and in several.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from audit.conftest import system_on
from audit.scenario import THRESHOLD, make_history
from audit.test_restore import views

from cluster.conftest import PARTITIONS
from muster import events, keys
from muster.ops.replay import ReplayRequest, replay
from muster.projections import families as projections
from muster.records import decode_request
from muster.settings import Settings

pytestmark = pytest.mark.anyio

_ID = re.compile(r"\d{15,20}")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT")
_DIGEST = re.compile(r"^[0-9a-f]{32}$")
EVERYTHING = tuple(f for f in projections.ALL if f != "deliveries")


def _normal(value: Any) -> Any:
    """`value` with ids, times, durations and keyed digests blanked (they differ between any
    two runs: a suspect answer's evidence says how many seconds after its delivery it came,
    and hashes its network and source with a key of the run)."""
    if isinstance(value, float):
        return "<seconds>"
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str):
        if _TIME.match(value):
            return "<time>"
        if _DIGEST.match(value):
            return "<digest>"
        return _ID.sub("<id>", value)
    return value


def _seen(views: dict[str, Any]) -> dict[str, Any]:
    """What people see, ids and times blanked; the audit log as a sorted list, since the
    order of events the workers append (an enrolment's expansion) depends on timing."""
    seen: dict[str, Any] = _normal(views)
    seen["audit"] = sorted(repr(row) for row in seen["audit"])
    return seen


async def _requests(redis: aioredis.Redis) -> list[tuple[str, str]]:
    """(recipient, channel) of every delivery request routed, sorted."""
    found = []
    for p in range(PARTITIONS):
        for channel in keys.OFFAPP_CHANNELS:
            entries: Any = await redis.xrange(keys.deliveries(p, channel))
            for _, fields in entries:
                request = decode_request(fields[events.STREAM_FIELD])
                found.append((request.recipient, request.channel))
    return sorted(found)


async def _run(redis: aioredis.Redis, settings: Settings) -> tuple[Any, list[tuple[str, str]]]:
    async with system_on(redis, settings) as s:
        tokens = await make_history(s)
        seen = await views(s, tokens)
        assert seen["audit"]  # the audit worker projected the log
        return _seen(seen), await _requests(s.redis)


async def test_the_scenario_reads_the_same_on_a_cluster_as_on_one_redis(
    settings: Settings,
    aredis: aioredis.Redis,
    cluster_settings: Settings,
    cluster_redis: aioredis.Redis,
) -> None:
    single = msgspec.structs.replace(
        cluster_settings, redis_url=settings.redis_url, fanout_on_read_threshold=THRESHOLD
    )
    on_cluster = msgspec.structs.replace(cluster_settings, fanout_on_read_threshold=THRESHOLD)
    expected_views, expected_requests = await _run(aredis, single)
    got_views, got_requests = await _run(cluster_redis, on_cluster)
    assert expected_requests  # the scenario routes email, SMS and webhook deliveries
    assert got_requests == expected_requests
    for name in expected_views:
        assert got_views[name] == expected_views[name], name


async def test_a_replay_on_a_cluster_rebuilds_the_same_projections(
    cluster_settings: Settings, cluster_redis: aioredis.Redis
) -> None:
    settings = msgspec.structs.replace(cluster_settings, fanout_on_read_threshold=THRESHOLD)
    async with system_on(cluster_redis, settings) as s:
        await make_history(s)
        before = await projections.checksum(s.redis, PARTITIONS)
        assert before.families["timelines"][1] > 0
        assert before.families["audit"][1] > 0
        logged = len(await s.log_events())
        for workers in (1, 3):  # one process; one per share of the 8 partitions
            request = ReplayRequest(projections=EVERYTHING, batch=7, workers=workers)
            result = await replay(s.redis, settings, request)
            assert result.workers == workers
            assert result.events == logged
            assert result.dropped_keys > 0
            after = await projections.checksum(s.redis, PARTITIONS)
            assert after == before, f"workers={workers}"
        await s.settle()
