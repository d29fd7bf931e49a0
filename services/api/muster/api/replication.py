"""MUSTER_WRITE_REPLICAS: a 2xx to a write also means N replicas hold it (guarantee 1 with
`appendfsync everysec` plus replicas, trading one second of local exposure for speed).

Plain ASGI middleware around every write (POST, PUT, PATCH, DELETE): when the app answers
2xx, it first runs INCR keys.REPLICATION_MARK + WAIT N MUSTER_WRITE_WAIT_MS on one
connection. WAIT covers the writes of its own connection, and the replication offset is
global, so a write made after the request's writes covers those too, whatever connection the
request used. Too few replicas in time → 503 `not_replicated` with Retry-After instead: the
event is in the log on the primary, so a retry with the same Idempotency-Key answers with the
first response once replicas catch up. Off (not installed) when MUSTER_WRITE_REPLICAS is 0.

In a Redis Cluster each partition's stream lives on its own master, with its own replicas
and replication offset: the request's appends are collected (eventlog.appended) and, on each
master that took one, INCR of that partition's mark (keys.replication_mark, same slot) and
WAIT go down one connection of that master, all masters at once; the answer is the fewest
replicas any of them confirmed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from muster import eventlog, keys
from muster.api import bodies
from muster.connection import UNAVAILABLE

log = structlog.get_logger("muster.api.replication")
_WRITES = {"POST", "PUT", "PATCH", "DELETE"}


async def replicas_holding(
    redis: aioredis.Redis, replicas: int, wait_ms: int, partitions: Collection[int] = ()
) -> int:
    """How many replicas acknowledged every write made so far (waiting up to wait_ms); in a
    cluster, of the masters holding `partitions` (the fewest of any)."""
    if isinstance(redis, aiocluster.RedisCluster):
        nodes = {}
        for p in partitions:
            mark = keys.replication_mark(p)
            nodes.setdefault(
                redis.get_node_from_key(mark).name, (redis.get_node_from_key(mark), mark)
            )
        if not nodes:
            return replicas  # nothing appended: nothing to wait for
        counts = await asyncio.gather(
            *(_mark_and_wait(node, mark, replicas, wait_ms) for node, mark in nodes.values())
        )
        return min(counts)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incr(keys.REPLICATION_MARK)
        pipe.wait(replicas, wait_ms)
        _, acknowledged = await pipe.execute()
    return int(acknowledged)


async def _mark_and_wait(
    node: aiocluster.ClusterNode, mark: str, replicas: int, wait_ms: int
) -> int:
    """INCR + WAIT down ONE connection of `node` (WAIT covers its own connection's writes; a
    pipeline of the cluster client may use any of the node's connections)."""
    connection = node.acquire_connection()
    try:
        await node.disconnect_if_needed(connection)
        await connection.send_packed_command(
            connection.pack_commands([("INCR", mark), ("WAIT", replicas, wait_ms)])
        )
        await connection.read_response()
        return int(await connection.read_response())
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        node.release(connection)


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
        appended: set[int] = set()
        eventlog.appended.set(appended)  # this request's task and the tasks it starts

        async def send_after_replicas(message: Message) -> None:
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                redis: aioredis.Redis = scope["app"].state.muster.redis
                try:
                    acknowledged = await replicas_holding(
                        redis, self.replicas, self.wait_ms, appended
                    )
                except UNAVAILABLE as exc:
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
