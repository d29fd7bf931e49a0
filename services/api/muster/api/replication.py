"""MUSTER_WRITE_REPLICAS: a 2xx to a write also means N replicas hold it (guarantee 1 with
`appendfsync everysec` plus replicas, trading one second of local exposure for speed).

Plain ASGI middleware around every write (POST, PUT, PATCH, DELETE): when the app answers
2xx, it first runs INCR keys.REPLICATION_MARK + WAIT N MUSTER_WRITE_WAIT_MS on one
connection. WAIT covers the writes of its own connection, and the replication offset is
global, so a write made after the request's writes covers those too, whatever connection the
request used. Too few replicas in time → 503 `not_replicated` with Retry-After instead: the
event is in the log on the primary, so a retry with the same Idempotency-Key answers with the
first response once replicas catch up. Off (not installed) when MUSTER_WRITE_REPLICAS is 0.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from muster import keys
from muster.api import bodies

log = structlog.get_logger("muster.api.replication")
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


async def replicas_holding(redis: aioredis.Redis, replicas: int, wait_ms: int) -> int:
    """How many replicas acknowledged every write made so far (waiting up to wait_ms)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incr(keys.REPLICATION_MARK)
        pipe.wait(replicas, wait_ms)
        _, acknowledged = await pipe.execute()
    return int(acknowledged)


class Replicated:
    def __init__(self, app: ASGIApp, *, replicas: int, wait_ms: int) -> None:
        self.app = app
        self.replicas = replicas
        self.wait_ms = wait_ms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _WRITES:
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}

        async def send_after_replicas(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                redis: aioredis.Redis = scope["app"].state.muster.redis
                try:
                    acknowledged = await replicas_holding(redis, self.replicas, self.wait_ms)
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    # Answered here: the app's handlers sit inside this layer, and its
                    # response has begun as far as they can tell.
                    log.error("redis unavailable for the replica wait", error=str(exc))
                    held["refused"] = True
                    unavailable = bodies.error(
                        503,
                        "unavailable",
                        "the event log is unavailable; retry with the same Idempotency-Key",
                        retry_after=2,
                    )
                    await unavailable(scope, receive, send)
                    return
                if acknowledged < self.replicas:
                    log.warning(
                        "write not replicated in time",
                        acknowledged=acknowledged,
                        wanted=self.replicas,
                    )
                    held["refused"] = True
                    retry = max(1, self.wait_ms // 1000)
                    refusal = bodies.error(
                        503,
                        "not_replicated",
                        f"accepted by the primary but only {acknowledged} of {self.replicas} "
                        "replicas confirmed it in time; retry with the same Idempotency-Key",
                        retry_after=retry,
                    )
                    await refusal(scope, receive, send)
                    return
            if held.get("refused"):
                return  # the app's own body: swallowed, the 503 went instead
            await send(message)

        await self.app(scope, receive, send_after_replicas)
