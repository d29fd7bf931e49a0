"""Redis clients: the one place that knows how to connect.

hiredis parses replies when installed (it is a dependency). The socket timeout is longer
than any blocking read (Settings.redis_socket_timeout), so a quiet stream is never taken
for a dead connection, while a dead server is noticed within seconds.

A process that serves a crowd (the API) uses `waiting_client`: a bounded pool on which
commands wait their turn for a connection. redis-py's default asyncio pool (what
`async_client` builds) holds at most 100 connections and raises `MaxConnectionsError` ("Too
many connections") for the 101st command in flight: a redis `ConnectionError`, which reads
exactly like a dead server. `PoolBusy` is that condition, named: the wait for a connection
ran out (or this process ran out of file descriptors), so the process is overloaded, and
Redis is not known to be down. It stays a `MaxConnectionsError`, hence a redis
`ConnectionError`, so code that retries those keeps retrying it; that is why it is not in
muster.errors. The API answers it with 429 `busy`.

Redis Cluster. When MUSTER_REDIS_URL names a cluster (`redis+cluster://host:port,...`), every
factory here returns redis-py's cluster client (`RedisCluster`, sync or asyncio) instead,
typed as the single-node client: Muster's code keeps to what both serve (every multi-key
command, MULTI and script within one hash tag, keys.py). The cluster client follows MOVED and
ASK, and retries CLUSTERDOWN, TRYAGAIN and lost connections with capped, jittered backoff
(CLUSTER_RETRY), which rides out a failover; what still fails after that is one of
`UNAVAILABLE`, which callers treat like a lost connection (a 503, a worker backing off),
never like a bad message. In a cluster the API's pool does not queue: each node allows
MUSTER_REDIS_CONNECTIONS connections and the next command in flight gets 429 `busy` at once.
rq has no cluster mode: `rq_client` connects to MUSTER_RQ_REDIS_URL, one server.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from typing import Any, cast

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.cluster as synccluster
import structlog
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MaxConnectionsError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from muster import keys
from muster.errors import ConfigError
from muster.settings import ClusterAddress, Settings, env_name

log = structlog.get_logger("muster.connection")

UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,  # CLUSTERDOWN, MASTERDOWN: a failover is under way
    TryAgainError,  # TRYAGAIN: a multi-key command during a slot migration
    AskError,  # MOVED/ASK still answered after every redirect was followed
    ClusterError,
    RedisClusterException,  # no node reachable, a slot no node serves
)
"""What Redis raises while it cannot answer for a moment (down, failing over, migrating a
slot): retried later, never taken for a bad request or a poison message."""

CLUSTER_RETRIES = 10
CLUSTER_BACKOFF_BASE_S = 0.05
CLUSTER_BACKOFF_CAP_S = 1.0
"""The cluster client retries a command up to 10 times, 50 ms doubling to 1 s apart with
jitter (about 5 s in all): a replica is promoted within cluster-node-timeout plus an election,
so a failover with a timeout of a few seconds is ridden out by the client alone."""

_OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})


class PoolBusy(MaxConnectionsError):
    """No connection within the pool's wait, or no file descriptor to open one."""


class WaitingPool(ConnectionPool):
    """At most `max_connections` connections; a command waits its turn, first come first
    served, up to `timeout` seconds, then raises PoolBusy.

    Not redis-py's BlockingConnectionPool: its condition lets a newcomer take the connection
    a waiter was woken for, and that waiter goes back to the end of the line, so under a
    crowd some waits run far past the average (at 3,000 clients: 50-130 of 9,000 requests
    waited over 5 s, against none here). The turns are an asyncio.Semaphore, which is FIFO.
    """

    def __init__(self, *, max_connections: int, timeout: float, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self.timeout = timeout
        self._turns = asyncio.Semaphore(max_connections)
        self._holders: set[AbstractConnection] = set()  # connections handed out with a turn

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if not self._turns.locked():
            await self._turns.acquire()  # a free turn: taken at once, no timer to arm
        else:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._turns.acquire()
            except TimeoutError:
                raise PoolBusy(
                    f"all {self.max_connections} Redis connections stayed in use for "
                    f"{self.timeout} s"
                ) from None
        try:
            # Connecting (when the pool grows or reconnects) runs outside the wait's timeout:
            # a server that does not answer is a redis TimeoutError, so 503, as before.
            # redis-py leaves get_connection untyped (a deprecation decorator wraps it).
            pending = super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
            connection: AbstractConnection = await pending
        except BaseException as exc:
            self._turns.release()
            if isinstance(exc, RedisConnectionError) and _out_of_descriptors(exc):
                raise PoolBusy(f"no file descriptor for a Redis connection: {exc}") from exc
            raise
        self._holders.add(connection)
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            # Once per connection handed out: a release cancelled while it waited for the
            # pool's lock is finished by redis-py in the background, through here again.
            if connection in self._holders:
                self._holders.discard(connection)
                self._turns.release()


def _out_of_descriptors(exc: BaseException) -> bool:
    """redis-py raises a failed connect as ConnectionError from the OSError, errno kept."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in _OUT_OF_DESCRIPTORS


def require_redis(settings: Settings, command: str) -> None:
    """A command that needs Redis refuses to start without MUSTER_REDIS_URL, saying why."""
    if settings.redis_url is None:
        raise ConfigError(
            f"MUSTER_REDIS_URL is not set: `muster {command}` needs a running Redis, and no "
            f"`muster up` is running on data dir {settings.data_dir} (MUSTER_DATA_DIR) to lend "
            "its embedded one: start `muster up` in this directory, or set MUSTER_REDIS_URL"
        )


def _url(settings: Settings) -> str:
    if settings.redis_url is None:
        raise ConfigError(
            "MUSTER_REDIS_URL is not set: `muster up` starts an embedded Redis and sets it for "
            "its children; a single process needs it set to a running server"
        )
    return settings.redis_url


def _transport_options(url: str) -> dict[str, bool]:
    """TCP keepalive for TCP URLs only: redis-py's unix-socket connection rejects the option."""
    return {} if url.startswith("unix:") else {"socket_keepalive": True}


def _cluster_options(address: ClusterAddress, settings: Settings) -> dict[str, Any]:
    return {
        "username": address.username,
        "password": address.password,
        "ssl": address.tls,
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "decode_responses": False,
        "require_full_coverage": True,
    }


def _backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(base=CLUSTER_BACKOFF_BASE_S, cap=CLUSTER_BACKOFF_CAP_S)


def async_cluster(
    address: ClusterAddress, settings: Settings, *, max_connections: int | None = None
) -> aioredis.Redis:
    """redis-py's asyncio cluster client, typed as the single-node one (see the docstring)."""
    client = aiocluster.RedisCluster(
        startup_nodes=[aiocluster.ClusterNode(host, port) for host, port in address.nodes],
        retry=AsyncRetry(_backoff(), CLUSTER_RETRIES),
        max_connections=max_connections or 100,  # per node
        **_cluster_options(address, settings),
    )
    return cast(aioredis.Redis, client)


def sync_cluster(address: ClusterAddress, settings: Settings) -> redis.Redis:
    client = synccluster.RedisCluster(
        startup_nodes=[
            synccluster.ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in address.nodes
        ],
        retry=Retry(_backoff(), CLUSTER_RETRIES),
        **_cluster_options(address, settings),
    )
    return cast(redis.Redis, client)


def is_cluster(client: Any) -> bool:
    """Whether `client` (or the client under a pipeline) is a cluster client."""
    return isinstance(
        client,
        aiocluster.RedisCluster
        | aiocluster.ClusterPipeline
        | synccluster.RedisCluster
        | synccluster.ClusterPipeline,
    )


def in_multi(pipe: Any) -> bool:
    """Whether `pipe` has had MULTI (pipe.multi()) called: queued writes are waiting for EXEC.
    redis-py's cluster pipeline keeps this in its transaction strategy."""
    strategy = getattr(pipe, "_execution_strategy", None)
    if strategy is not None:
        return bool(getattr(strategy, "_explicit_transaction", False))
    return bool(getattr(pipe, "explicit_transaction", False))


def async_client(settings: Settings, *, max_connections: int | None = None) -> aioredis.Redis:
    url = _url(settings)
    address = settings.redis_cluster
    if address is not None:
        return async_cluster(address, settings, max_connections=max_connections)
    return aioredis.Redis.from_url(
        url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=5.0,
        **_transport_options(url),
        health_check_interval=30,
        max_connections=max_connections,
        decode_responses=False,
    )


def waiting_client(settings: Settings, *, connections: int, wait_s: float) -> aioredis.Redis:
    """An asyncio client on a WaitingPool of `connections`: with more commands in flight
    than that, each waits up to `wait_s` for a free connection, then raises PoolBusy."""
    url = _url(settings)
    address = settings.redis_cluster
    if address is not None:
        return async_cluster(address, settings, max_connections=connections)
    pool = WaitingPool.from_url(
        url,
        max_connections=connections,
        timeout=wait_s,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=5.0,
        **_transport_options(url),
        health_check_interval=30,
        decode_responses=False,
    )
    return aioredis.Redis.from_pool(pool)


def sync_client(settings: Settings) -> redis.Redis:
    url = _url(settings)
    address = settings.redis_cluster
    if address is not None:
        return sync_cluster(address, settings)
    return redis.Redis.from_url(
        url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=5.0,
        **_transport_options(url),
        health_check_interval=30,
        decode_responses=False,
    )


def rq_client(settings: Settings) -> redis.Redis:
    """A sync client for rq, on MUSTER_RQ_REDIS_URL (else MUSTER_REDIS_URL when that is one
    server), with no socket timeout: rq's worker blocks on its queues for minutes at a time (a
    dead server is still noticed by the health check and keepalive)."""
    _url(settings)
    url = settings.rq_url
    if url is None:
        raise ConfigError(
            f"{env_name('rq_redis_url')} is not set, and {env_name('redis_url')} names a Redis "
            "Cluster, which rq (operator jobs: `muster worker ops`, `muster replay` without "
            f"--inline) cannot use: set {env_name('rq_redis_url')} to a single-node Redis"
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=None,
        socket_connect_timeout=5.0,
        **_transport_options(url),
        health_check_interval=30,
        decode_responses=False,
    )


def text(value: Any) -> str:
    """A reply (bytes: clients here never decode) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def texts(values: Any) -> list[str]:
    return [text(v) for v in values]


async def check_topology(client: aioredis.Redis, settings: Settings) -> None:
    """In a cluster, refuse MUSTER_PARTITIONS below the number of masters (some masters
    would hold no event log at all), and log the masters that hold no partition anyway (the
    partitions' hash tags fall into slots the operator did not give them). One server: nothing."""
    if not isinstance(client, aiocluster.RedisCluster):
        return
    await client.initialize()
    masters = {node.name for node in client.get_primaries()}
    if settings.partitions < len(masters):
        raise ConfigError(
            f"{env_name('partitions')}={settings.partitions} is fewer than the cluster's "
            f"{len(masters)} masters: each partition's keys live on one master, so some "
            f"masters would do nothing; set {env_name('partitions')} to at least "
            f"{len(masters)} (a multiple of it spreads best; changing it needs a replay)"
        )
    holding = {client.get_node_from_key(keys.events(p)).name for p in range(settings.partitions)}
    idle = sorted(masters - holding)
    if idle:
        log.warning(
            "masters holding no partition",
            masters=idle,
            partitions=settings.partitions,
            hint="move slots of the partitions' hash tags to them (redis-cli --cluster "
            "rebalance) or raise MUSTER_PARTITIONS",
        )


async def scan_pages(redis: aioredis.Redis, match: str, count: int) -> AsyncIterator[list[bytes]]:
    """Every key matching `match`, a SCAN page at a time: on one server one cursor; in a
    cluster one cursor per master, each walking its own keyspace."""
    if isinstance(redis, aiocluster.RedisCluster):
        for node in redis.get_primaries():
            cursor: Any = 0
            while True:
                # redis-py's cluster SCAN answers (cursor by node name, keys)
                reply: Any = await redis.scan(cursor, match=match, count=count, target_nodes=node)
                cursors, page = reply
                cursor = cursors[node.name]
                yield list(page)
                if not int(cursor):
                    break
        return
    cursor = 0
    while True:
        cursor, keys_ = await redis.scan(cursor, match=match, count=count)
        yield [key for key in keys_ if isinstance(key, bytes)]  # our clients never decode
        if not int(cursor):
            return
