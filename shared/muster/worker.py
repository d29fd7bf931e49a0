"""Running a worker process: one ConsumerLoop per partition for a group, stopped by SIGTERM.

Each worker kind (timeline, delivery, audit) supplies only its handler; this module wires
it to the loop, the Redis client and the signals. It does no event handling of its own.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis
import structlog

from muster import events, keys
from muster.connection import async_client, check_topology
from muster.consumer import ConsumerLoop, Decode, Handler, LoopConfig, Message, Outcomes
from muster.settings import Settings

log = structlog.get_logger("muster.worker")

HandlerFactory = Callable[[aioredis.Redis, Settings], Awaitable[Handler]]


@runtime_checkable
class Service(Protocol):
    """A handler with work of its own beside the loops (timers, connection pools).

    When make_handler returns one, `serve` runs `run_beside(stop)` next to the consumer
    loops until stop, and `aclose()` once everything has stopped.
    """

    async def __call__(self, messages: Sequence[Message[Any]]) -> Outcomes | None: ...

    async def run_beside(self, stop: asyncio.Event) -> None: ...

    async def aclose(self) -> None: ...


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run a worker process's event loop until `main` returns: on uvloop when it is installed
    (uvicorn[standard] brings it; the delivery worker sends markedly more per second on it,
    see tests/benchmarks/delivery.py), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        asyncio.run(main)
        return
    uvloop.run(main)


def loop_config(settings: Settings) -> LoopConfig:
    return LoopConfig(
        batch=settings.consumer_batch,
        block_ms=settings.consumer_block_ms,
        claim_idle_ms=settings.claim_idle_ms,
        max_attempts=settings.max_attempts,
    )


def event_log_streams(group: str) -> Callable[[int], Sequence[str]]:
    """A group on the event log reads each partition plus its own re-drive stream."""
    return lambda partition: [keys.events(partition), keys.retry(partition, group)]


def build_loops(
    redis: aioredis.Redis,
    settings: Settings,
    *,
    group: str,
    handler: Handler,
    streams_for: Callable[[int], Sequence[str]],
    decode: Decode,
) -> list[ConsumerLoop]:
    """One loop per partition over `streams_for(partition)`, whose entries `decode` reads
    (events.decode for the event log): named by every caller, since the streams decide it."""
    config = loop_config(settings)
    return [
        ConsumerLoop(
            redis,
            streams=streams_for(partition),
            group=group,
            handler=handler,
            dead_letters=keys.dead_letters(partition),
            config=config,
            decode=decode,
        )
        for partition in range(settings.partitions)
    ]


async def serve(
    settings: Settings,
    *,
    group: str,
    make_handler: HandlerFactory,
    streams_for: Callable[[int], Sequence[str]] | None = None,
    decode: Decode | None = None,
) -> None:
    """Run `group` until SIGTERM or SIGINT; the batch in hand is finished and acked first.
    Streams other than the event log come with the decoder of what they hold."""
    if (streams_for is None) != (decode is None):
        raise ValueError("streams_for and decode go together: the streams decide the decoder")
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    redis = async_client(settings)
    try:
        await check_topology(redis, settings)
        handler = await make_handler(redis, settings)
        loops = build_loops(
            redis,
            settings,
            group=group,
            handler=handler,
            streams_for=streams_for or event_log_streams(group),
            decode=decode or events.decode,
        )
        log.info("worker started", group=group, partitions=settings.partitions)
        work = [loop.run(stop) for loop in loops]
        if isinstance(handler, Service):
            work.append(handler.run_beside(stop))
        try:
            await asyncio.gather(*work)
        finally:
            if isinstance(handler, Service):
                await handler.aclose()
        log.info("worker stopped", group=group)
    finally:
        await redis.aclose()
