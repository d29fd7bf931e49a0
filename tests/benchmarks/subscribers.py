"""Subscriber fan-out benchmark: how many subscribers one public post reaches per second,
against the follower fan-out, in the same run.

    python tests/benchmarks/subscribers.py [--recipients N] [--repeats R] [--deliver]

Not a test (pytest does not collect it): a command that prints figures. It starts its own
redis-server (a temp dir, no persistence), then builds, through the write side's own
`WriteSide.apply` and the timeline projection's own code:
- `ops`, followed by N people, each with an email address and the follow on `email`;
- `status`, with N active email subscriptions (SubscriptionRequested + Confirmed each);
and R times each, interleaved, applies one public PostPublished of each account with
`Timeline.apply_batch` (what the timeline worker runs: fan-out, routing, the live entry)
and counts the delivery requests it appended (all N, else exit 1). Printed: per account, the
median time per post and recipients routed per second.

With `--deliver` the clock runs end to end instead: a real `muster worker delivery` process
(the CLI) and the SMTP sink of benchmarks/sinks.py are running, and each post is timed from
`apply_batch` until the sink has accepted all N emails (subscribers' with their
List-Unsubscribe headers, followers' without), so the figure is people reached per second.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the suite's redis_server helper

import redis  # noqa: E402
from benchmarks._peers import Sinks, start_worker, wait_group  # noqa: E402
from redis_server import start_redis_server  # noqa: E402

from muster import keys  # noqa: E402
from muster.connection import async_client  # noqa: E402
from muster.events import (  # noqa: E402
    AccountCreated,
    AccountFollowed,
    AnyEvent,
    PostPublished,
    SubscriptionConfirmed,
    SubscriptionRequested,
    utcnow,
)
from muster.ids import IdGenerator  # noqa: E402
from muster.projections.timeline import Timeline  # noqa: E402
from muster.settings import Settings  # noqa: E402
from muster.subscriptions import subscription_id  # noqa: E402
from muster.writeside import WriteSide  # noqa: E402

CHUNK = 2000


async def apply_all(writeside: WriteSide, batch: list[AnyEvent]) -> None:
    for start in range(0, len(batch), CHUNK):
        async with writeside.redis.pipeline(transaction=False) as pipe:
            for event in batch[start : start + CHUNK]:
                await writeside.apply(pipe, event)
            await pipe.execute()


async def build(settings: Settings, n: int, ids: IdGenerator) -> None:
    redis = async_client(settings)
    writeside = WriteSide(redis, partitions=settings.partitions)
    timeline = Timeline(redis, settings, announce=False)
    now = utcnow()
    created: list[AnyEvent] = [
        AccountCreated(id=ids.next(), actor="admin", at=now, handle=h, account_id=ids.next(),
                       kind="team")
        for h in ("ops", "status")
    ]  # fmt: skip
    follows: list[AnyEvent] = []
    subs: list[AnyEvent] = []
    for i in range(n):
        handle = f"p{i}"
        created.append(
            AccountCreated(id=ids.next(), actor="admin", at=now, handle=handle,
                           account_id=ids.next(), kind="person", role="member",
                           email=f"{handle}@example.test")
        )  # fmt: skip
        follows.append(
            AccountFollowed(id=ids.next(), actor=handle, at=now, follower=handle, account="ops",
                            channels=("app", "email"), seq=1)
        )  # fmt: skip
        address = f"s{i}@example.test"
        sid = subscription_id("status", "email", address)
        subs.append(
            SubscriptionRequested(id=ids.next(), actor="anonymous", at=now, subscription=sid,
                                  account="status", channel="email", address=address,
                                  expires_at=now + timedelta(days=1))
        )  # fmt: skip
        subs.append(
            SubscriptionConfirmed(id=ids.next(), actor="anonymous", at=now, subscription=sid,
                                  account="status", channel="email", how="email_link")
        )  # fmt: skip
    await apply_all(writeside, created + follows + subs)
    for start in range(0, len(follows), CHUNK):
        await timeline.apply_batch(follows[start : start + CHUNK])
    await redis.aclose()


async def requests(settings: Settings) -> int:
    redis = async_client(settings)
    try:
        return sum(
            [int(await redis.xlen(keys.deliveries(p, "email"))) for p in range(settings.partitions)]
        )
    finally:
        await redis.aclose()


async def one_post(
    settings: Settings, account: str, ids: IdGenerator, sinks: Sinks | None
) -> tuple[float, int]:
    """Time to route one public post of `account`, or with `sinks`, to have every email of it
    accepted by the SMTP sink; and the delivery requests it appended."""
    redis = async_client(settings)
    timeline = Timeline(redis, settings, announce=False)
    before = await requests(settings)
    if sinks is not None:
        sinks.reset()
    post = PostPublished(id=ids.next(), actor="pat", at=utcnow(), author="pat", as_account=account,
                         text="Checkout is slow; we are on it", visibility="public")  # fmt: skip
    started = time.perf_counter()
    await timeline.apply_batch([post])
    appended = await requests(settings) - before
    if sinks is not None:
        deadline = time.monotonic() + 600
        while sinks.received("email")[0] < appended:
            if time.monotonic() > deadline:
                raise SystemExit(f"@{account}: the sink got {sinks.received('email')} in 600 s")
            await asyncio.sleep(0.01)
    took = time.perf_counter() - started
    await redis.aclose()
    if sinks is not None and sinks.received("email") != (appended, appended):
        raise SystemExit(f"@{account}: the sink got {sinks.received('email')}, not {appended}")
    return took, appended


async def run(args: argparse.Namespace, settings: Settings, sinks: Sinks | None) -> int:
    ids = IdGenerator(1)
    print(f"building {args.recipients:,} followers of @ops and subscribers of @status ...")
    await build(settings, args.recipients, ids)
    times: dict[str, list[float]] = {"ops": [], "status": []}
    done = "reached (emails accepted by SMTP)" if sinks else "routed"
    for _ in range(args.repeats):
        for account in times:
            took, appended = await one_post(settings, account, ids, sinks)
            if appended != args.recipients:
                print(f"@{account}: {appended} requests, expected {args.recipients}")
                return 1
            times[account].append(took)
    for account, what in (("ops", "followers (email)"), ("status", "subscribers (email)")):
        median = statistics.median(times[account])
        print(
            f"{what:>22}: {median * 1000:8.1f} ms per public post, "
            f"{args.recipients / median:12,.0f} recipients {done}/s (median of {args.repeats})"
        )
    ratio = statistics.median(times["ops"]) / statistics.median(times["status"])
    print(f"subscribers {done} {ratio:.2f} x as fast as followers")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--deliver", action="store_true", help="time until every email is sent")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis_server(Path(tmp))
        sinks = worker = None
        try:
            settings = Settings(redis_url=server.url, partitions=1)
            if args.deliver:
                sinks = Sinks()
                worker = start_worker(server.url, sinks, Path(tmp) / "delivery.log")
                wait_group(redis.Redis.from_url(server.url), keys.deliveries(0, "email"))
            return asyncio.run(run(args, settings, sinks))
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=30)
            if sinks is not None:
                sinks.close()
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
