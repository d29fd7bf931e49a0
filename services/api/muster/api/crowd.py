"""How an api process meets a crowd: every request is answered, slower if it must, or 429 `busy`.

Requests share one bounded Redis pool of MUSTER_REDIS_CONNECTIONS. Past that many commands in
flight, a command waits for a free connection, up to POOL_WAIT_S; a request whose command
waited that long in vain answers 429 `busy` with Retry-After, never 503, which is kept for a
Redis that cannot be reached. A crowd is not a fault.

The live hub's blocking XREAD (and the catch-up reads of streams that resume) runs on a small
pool of its own: live streams never hold a connection requests need, and a crowd never makes
live updates wait in line behind it. Nothing here rate-limits callers; it only keeps one
process's Redis connections, and so Redis's, bounded whatever the number of clients.

Every client connection is a file descriptor, and so is every Redis connection: at the common
soft limit of 1,024 (systemd's default), a thousand clients leave the pool none to connect
with. `raise_open_files_limit` lifts the soft limit to the hard one when the process starts;
a pool that still finds none answers 429 `busy` too (connection.PoolBusy).
"""

from __future__ import annotations

import resource

import redis.asyncio as aioredis
import structlog
from starlette.requests import Request
from starlette.responses import Response

from muster.api import bodies
from muster.connection import waiting_client
from muster.settings import Settings

log = structlog.get_logger("muster.api.crowd")

POOL_WAIT_S = 5.0
"""How long one Redis command of a request waits for a free connection before 429 `busy`."""
BUSY_RETRY_AFTER_S = 1
LIVE_CONNECTIONS = 5
"""The live hubs' pool: their blocking XREADs (posts, roll-calls), and catch-up reads of
resuming streams."""
OPEN_FILES_UNLIMITED = 1 << 20
"""The soft limit asked for when the hard one is unlimited (Linux's default nr_open)."""


def request_client(settings: Settings) -> aioredis.Redis:
    """The client every request uses: at most MUSTER_REDIS_CONNECTIONS connections."""
    return waiting_client(settings, connections=settings.redis_connections, wait_s=POOL_WAIT_S)


def live_client(settings: Settings) -> aioredis.Redis:
    """The live hub's own client (muster.api.livehub), apart from the requests' pool."""
    return waiting_client(settings, connections=LIVE_CONNECTIONS, wait_s=POOL_WAIT_S)


def auth_client(settings: Settings) -> aioredis.Redis:
    """The auth-change subscription's own connection (muster.api.tokens)."""
    return waiting_client(settings, connections=1, wait_s=POOL_WAIT_S)


async def busy(request: Request, exc: Exception) -> Response:
    """The answer to PoolBusy (or any MaxConnectionsError): 429 `busy`, not 503."""
    log.warning("redis pool busy", path=request.url.path, error=str(exc))
    return bodies.error(
        429,
        "busy",
        "the API has more requests in hand than it can serve at once; retry",
        retry_after=BUSY_RETRY_AFTER_S,
    )


def raise_open_files_limit() -> tuple[int, int]:
    """Lift this process's soft RLIMIT_NOFILE to its hard limit; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_UNLIMITED if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # a cap below the hard limit (nr_open, a sandbox)
            return soft, soft
        return soft, target
    return soft, soft
