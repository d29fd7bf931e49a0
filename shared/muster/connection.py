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
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError

from muster.errors import ConfigError
from muster.settings import Settings

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


def async_client(settings: Settings, *, max_connections: int | None = None) -> aioredis.Redis:
    url = _url(settings)
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
    return redis.Redis.from_url(
        url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=5.0,
        **_transport_options(url),
        health_check_interval=30,
        decode_responses=False,
    )


def blocking_sync_client(settings: Settings) -> redis.Redis:
    """A sync client with no socket timeout, for rq: its worker blocks on its queues for
    minutes at a time (a dead server is still noticed by the health check and keepalive)."""
    url = _url(settings)
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
