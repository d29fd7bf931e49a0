"""Fixtures for the Redis Cluster tests: a real local cluster (tests/redis_cluster.py).

- `cluster`: one cluster of 3 masters with a replica each for the whole session, emptied
  before each test that asks for it (tests that kill or move things start their own with
  `LocalCluster` instead).
- `cluster_settings`: the root `make_settings` pointed at it (`redis+cluster://...`), with
  8 partitions, an admin token, the Twilio token the scenario signs its inbound SMS with, and
  the archive in the test's temp dir.
- `cluster_redis`: an asyncio cluster client on it, closed at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis
from audit.conftest import ADMIN_TOKEN, TWILIO_TOKEN
from conftest import SettingsFactory
from redis_cluster import LocalCluster

from muster.connection import async_client
from muster.settings import Settings

PARTITIONS = 8


@pytest.fixture(scope="session")
def cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def cluster(cluster_session: LocalCluster) -> LocalCluster:
    cluster_session.wait_ready()
    cluster_session.flushall()
    return cluster_session


def settings_for(
    cluster: LocalCluster, make_settings: SettingsFactory, tmp_path: Path, **overrides: object
) -> Settings:
    base = make_settings(cluster.nodes[0])  # the root fixture's timings; the URL is replaced
    return msgspec.structs.replace(
        base,
        redis_url=cluster.url,
        partitions=PARTITIONS,
        admin_token=ADMIN_TOKEN,
        consumer_block_ms=100,
        archive_dir=tmp_path / "archive",
        twilio_auth_token=TWILIO_TOKEN,  # the scenario's inbound SMS is signed with it
        **overrides,
    )


@pytest.fixture
def cluster_settings(
    cluster: LocalCluster, make_settings: SettingsFactory, tmp_path: Path
) -> Settings:
    return settings_for(cluster, make_settings, tmp_path)


@pytest.fixture
async def cluster_redis(cluster_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = async_client(cluster_settings)
    try:
        yield client
    finally:
        await client.aclose()
