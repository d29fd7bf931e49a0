"""A worker process for crash tests: the real `muster.worker.serve` over a recording handler.

    python tests/consumer_proc.py --group G --sleep SECONDS

Settings come from the MUSTER_ environment like any worker's (MUSTER_REDIS_URL,
MUSTER_CLAIM_IDLE_MS, MUSTER_CONSUMER_BATCH, ...). For each batch the handler first sleeps
`--sleep` seconds — the window in which a test kills the process — and only then records
its effect: HINCRBY HANDLED <event id> 1 for every message, in one pipeline. A process
killed during the sleep has therefore recorded nothing of its batch, which is what lets the
test demand that every event be recorded exactly once. SIGTERM stops it cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from muster.consumer import Handler, Message
from muster.logs import configure_logging
from muster.settings import Settings, load_settings
from muster.worker import serve

HANDLED = "test:handled"
"""Hash event id → times handled. A test-only key in a test-only server, never in keys.py."""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--group", required=True)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds before recording")
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_logging(settings, process=f"consumer-proc:{args.group}")

    async def make_handler(redis: aioredis.Redis, _settings: Settings) -> Handler:
        async def handle(messages: Sequence[Message[Any]]) -> None:
            await asyncio.sleep(args.sleep)
            async with redis.pipeline(transaction=False) as pipe:
                for message in messages:
                    pipe.hincrby(HANDLED, message.event.id, 1)
                await pipe.execute()

        return handle

    asyncio.run(serve(settings, group=args.group, make_handler=make_handler))


if __name__ == "__main__":
    main()
