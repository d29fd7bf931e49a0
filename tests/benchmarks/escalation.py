"""One escalation round over a large audience: people told per second, by the real firing code.

    python tests/benchmarks/escalation.py [--people 100000] [--answered 0.5] [--partitions 4]

Starts its own redis-server (tests/redis_server.py). The state a roll-call has when a round
falls due is written directly (the api path would take minutes): the post as the timeline
worker stores it, the policy snapshot, N people in the audience (each with an email address
and a manager among N/100), and a share of them answered (through WriteSide.apply, the api's
own write). Then `muster.escalation.firing.Firer` fires, as the escalation worker does:

1. step 0, `to: recipient`, email: one RollCallEscalated per page, a delivery request each;
2. step 1, `to: manager`, email: one request per (manager, person);
3. step 0 again (a reclaimed round): tells nobody, sends nothing.

Prints the time of each, people told per second, events and requests appended, and the load
average (a busy machine's figure can be told from a slow code's).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the suite's redis_server helper

from redis_server import start_redis_server  # noqa: E402

from muster import keys, views  # noqa: E402
from muster.connection import async_client  # noqa: E402
from muster.escalation.firing import Firer  # noqa: E402
from muster.events import (  # noqa: E402
    EscalationPolicy,
    EscalationStep,
    PostPublished,
    RollCall,
    RollCallAnswered,
    RollCallOption,
)
from muster.ids import IdGenerator  # noqa: E402
from muster.records import EscalationDue, encode_policy  # noqa: E402
from muster.settings import Settings  # noqa: E402
from muster.writeside import WriteSide  # noqa: E402

BATCH = 2000


async def setup(settings: Settings, people: int, answered: float) -> str:
    redis = async_client(settings)
    ids = IdGenerator(node=7)
    writeside = WriteSide(redis, partitions=settings.partitions)
    now = datetime.now(UTC)
    policy = EscalationPolicy(
        name="bench",
        version=1,
        steps=(
            EscalationStep(after_s=60, to="recipient", channels=("email",)),
            EscalationStep(after_s=120, to="manager", channels=("email",)),
        ),
    )
    post = PostPublished(
        id=ids.next(),
        actor="boss",
        at=now,
        author="boss",
        as_account="boss",
        text="are you safe?",
        rollcall=RollCall(
            options=(
                RollCallOption(key="1", label="safe", kind="ok"),
                RollCallOption(key="2", label="help", kind="help"),
            ),
            deadline=now + timedelta(hours=1),
            grace_s=3600,
            policy="bench",
            escalation=policy,
        ),
    )
    rc = post.id
    parts = settings.partitions
    await redis.set(
        keys.post(keys.partition_of_id(rc, parts), rc), views.encode(views.post_of(post))
    )
    await redis.set(
        keys.rollcall_policy(keys.partition_of("boss", parts), rc), encode_policy(policy)
    )
    managers = max(1, people // 100)
    handles = [f"u{i:06d}" for i in range(people)]
    for start in range(0, people, BATCH):
        async with redis.pipeline(transaction=False) as pipe:
            for i, handle in enumerate(handles[start : start + BATCH], start):
                q = keys.partition_of(handle, parts)
                pipe.sadd(keys.rollcall_audience(q, rc), handle)
                pipe.hset(
                    keys.account(q, handle),
                    mapping={"handle": handle, "kind": "person", "manager": f"m{i % managers:04d}"},
                )
                pipe.sadd(keys.reach(q, "email"), handle)
            await pipe.execute()
    async with redis.pipeline(transaction=False) as pipe:
        for m in range(managers):
            handle = f"m{m:04d}"
            pipe.sadd(keys.reach(keys.partition_of(handle, parts), "email"), handle)
        await pipe.execute()
    answering = handles[: int(people * answered)]
    for start in range(0, len(answering), BATCH):
        async with redis.pipeline(transaction=False) as pipe:
            for handle in answering[start : start + BATCH]:
                event = RollCallAnswered(
                    id=ids.next(),
                    actor=handle,
                    at=now,
                    rollcall=rc,
                    account="boss",
                    recipient=handle,
                    option="1",
                    kind="ok",
                )
                await writeside.apply(pipe, event)
            await pipe.execute()
    await redis.aclose()
    return rc


async def counts(settings: Settings) -> tuple[int, int]:
    redis = async_client(settings)
    events = sum([await redis.xlen(keys.events(p)) for p in range(settings.partitions)])
    requests = sum(
        [await redis.xlen(keys.deliveries(p, "email")) for p in range(settings.partitions)]
    )
    await redis.aclose()
    return events, requests


async def run(args: argparse.Namespace, settings: Settings) -> int:
    began = time.monotonic()
    rc = await setup(settings, args.people, args.answered)
    print(
        f"setup: {args.people:,} people, {args.answered:.0%} answered, "
        f"{settings.partitions} partitions, {time.monotonic() - began:.1f} s"
    )
    redis = async_client(settings)
    firer = Firer(redis, settings)
    for label, round_ in (
        ("step 0 to the person", "s0l0"),
        ("step 1 to the manager", "s1l0"),
        ("step 0 again (reclaimed)", "s0l0"),
    ):
        before = await counts(settings)
        start = time.monotonic()
        told = await firer.fire(EscalationDue(rc, round_))
        took = time.monotonic() - start
        after = await counts(settings)
        rate = f"{told / took:,.0f} people told/s" if told else "nobody told"
        print(
            f"{label}: {took:.2f} s, {told:,} told, {rate}, "
            f"{after[0] - before[0]:,} events, {after[1] - before[1]:,} requests"
        )
    await redis.aclose()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--answered", type=float, default=0.5)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis_server(Path(tmp))
        try:
            settings = Settings(redis_url=server.url, partitions=args.partitions)
            return asyncio.run(run(args, settings))
        finally:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
