"""Cluster configuration: the URL forms, rq kept off the cluster, a partition count that
cannot use every master refused, and scripts whose keys would span slots refused by name."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from muster import keys, scripts
from muster.connection import check_topology, rq_client
from muster.errors import ConfigError
from muster.settings import ClusterAddress, Settings, load_settings

pytestmark = pytest.mark.anyio


def test_a_cluster_url_names_its_nodes_credentials_and_tls() -> None:
    loaded = load_settings(
        {"MUSTER_REDIS_URL": "rediss+cluster://app:p%40ss@10.0.0.1:7000,[::1]:7001,redis-2:7002"}
    )
    assert loaded.redis_cluster == ClusterAddress(
        nodes=(("10.0.0.1", 7000), ("::1", 7001), ("redis-2", 7002)),
        tls=True,
        username="app",
        password="p@ss",
    )
    assert load_settings({"MUSTER_REDIS_URL": "redis://h:6379/0"}).redis_cluster is None


@pytest.mark.parametrize("url", ["redis+cluster://", "redis+cluster://h", "redis+cluster://h:0"])
def test_a_cluster_url_without_nodes_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="MUSTER_REDIS_URL must list the cluster's nodes"):
        load_settings({"MUSTER_REDIS_URL": url})


def test_rq_is_never_pointed_at_a_cluster() -> None:
    with pytest.raises(ConfigError, match="MUSTER_RQ_REDIS_URL names a Redis Cluster"):
        load_settings({"MUSTER_RQ_REDIS_URL": "redis+cluster://h:7000"})
    on_cluster = load_settings({"MUSTER_REDIS_URL": "redis+cluster://h:7000"})
    assert on_cluster.rq_url is None
    with pytest.raises(ConfigError, match="MUSTER_RQ_REDIS_URL is not set"):
        rq_client(on_cluster)
    single = load_settings({"MUSTER_REDIS_URL": "redis://h:6379/0"})
    assert single.rq_url == "redis://h:6379/0"
    both = load_settings(
        {"MUSTER_REDIS_URL": "redis+cluster://h:7000", "MUSTER_RQ_REDIS_URL": "redis://q:6379"}
    )
    assert both.rq_url == "redis://q:6379"


async def test_fewer_partitions_than_masters_is_refused(
    cluster_settings: Settings, cluster_redis: aioredis.Redis
) -> None:
    await check_topology(cluster_redis, cluster_settings)  # 8 partitions, 3 masters: fine
    two = Settings(redis_url=cluster_settings.redis_url, partitions=2)
    with pytest.raises(ConfigError, match="MUSTER_PARTITIONS=2 is fewer than the cluster's 3"):
        await check_topology(cluster_redis, two)


def test_a_script_called_with_keys_of_two_slots_is_refused_by_name() -> None:
    scripts.check_one_slot("enrol", [keys.follows(3, "mia"), keys.events(3)])
    with pytest.raises(scripts.CrossSlotScript, match="script enrol was called with keys of 2"):
        scripts.check_one_slot("enrol", [keys.follows(3, "mia"), keys.events(4)])
    with pytest.raises(scripts.CrossSlotScript):
        scripts.check_one_slot("live_announce", [keys.live_seen("1"), keys.NODE_COUNTER])
