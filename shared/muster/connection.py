"""Redis clients: the one place that knows how to connect.

hiredis parses replies when installed (it is a dependency). The socket timeout is longer
than any blocking read (Settings.redis_socket_timeout), so a quiet stream is never taken
for a dead connection, while a dead server is noticed within seconds.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from muster.errors import ConfigError
from muster.settings import Settings


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
