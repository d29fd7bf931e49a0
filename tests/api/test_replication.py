"""MUSTER_WRITE_REPLICAS: a 2xx means the write reached that many replicas, else 503.

Runs a primary and a replica redis-server of the suite's own; the api talks to the primary.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from conftest import SettingsFactory
from harness import app_running, asgi_client
from redis_server import RedisFactory, RedisServer

from api.conftest import ADMIN_TOKEN, Api, assert_error
from muster import keys

pytestmark = pytest.mark.anyio


def replicate(replica: RedisServer, primary: RedisServer) -> None:
    """Make `replica` follow `primary` and wait (bounded) until the link is up."""
    with replica.client() as client:
        client.execute_command("REPLICAOF", "127.0.0.1", str(primary.port))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            info = client.info("replication")
            if info.get("master_link_status") == "up":
                return
            time.sleep(0.05)
    raise AssertionError("the replica did not connect within 10 s")


async def test_writes_wait_for_replicas_and_refuse_without_them(
    redis_factory: RedisFactory, make_settings: SettingsFactory
) -> None:
    primary = redis_factory()
    replica = redis_factory()
    replicate(replica, primary)
    settings = msgspec.structs.replace(
        make_settings(primary), admin_token=ADMIN_TOKEN, write_replicas=1, write_wait_ms=1000
    )
    redis = aioredis.Redis.from_url(primary.url)
    try:
        async with app_running(settings) as app, asgi_client(app) as client:
            api = Api(app=app, client=client, redis=redis, settings=settings)
            token = await api.person("ann")
            accepted = await api.call("POST", "/v1/posts", token=token, json={"text": "replicated"})
            assert accepted.status_code == 202
            with replica.client() as on_replica:  # WAIT returned: the replica has it
                assert on_replica.xlen(keys.events(0)) == await redis.xlen(keys.events(0))

            replica.stop()
            headers = {"Idempotency-Key": "k1"}
            refused = await api.call(
                "POST", "/v1/posts", token=token, json={"text": "alone"}, headers=headers
            )
            assert_error(refused, 503, "not_replicated")
            assert refused.headers["Retry-After"] == "1"
            # The primary has it (it cannot be taken back): the same key replays it later.
            replica.start()
            replicate(replica, primary)
            for _ in range(20):  # as a client does on 503: retry after a moment (bounded)
                again = await api.call(
                    "POST", "/v1/posts", token=token, json={"text": "alone"}, headers=headers
                )
                if again.status_code != 503:
                    break
                await asyncio.sleep(0.25)
            assert again.status_code == 202
            entries: Any = await redis.xrange(keys.events(0))
            assert sum(b'"alone"' in fields[b"e"] for _, fields in entries) == 1
            # reads never wait
            assert (await api.call("GET", "/v1/me", token=token)).status_code == 200
    finally:
        await redis.aclose()
