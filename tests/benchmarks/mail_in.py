"""Inbound mail benchmark: roll-call answers by email through a real `muster mail-in` process.

    python tests/benchmarks/mail_in.py [--people N] [--connections C]

Not a test (pytest does not collect it): a command that prints figures. It starts its own
redis-server (a temp dir, `appendfsync always` as `muster up` runs it), builds N people who
follow `ops` by email and a roll-call post of `ops` through the write side's and the timeline
projection's own code (the fan-out records the audience), starts `muster mail-in` as a
subprocess, then sends each person's reply ("safe", quoted original and signature below, as
a mail client writes it) to their reply address over C concurrent SMTP connections
(aiosmtplib, one message per MAIL/RCPT/DATA, sessions kept). Printed: answers/s, the SMTP
exchange's p50/p99 in ms, mail-in's share of a core, the machine's load; exit 1 unless the
report counts exactly N answers by email.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from datetime import timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: redis_server and benchmarks._servers

import aiosmtplib  # noqa: E402
from benchmarks._servers import (  # noqa: E402
    clean_env,
    cpu_ticks,
    muster,
    percentile,
    spawn,
    wait_for_port,
)
from redis_server import free_port, start_redis_server  # noqa: E402

from muster import keys  # noqa: E402
from muster.connection import async_client  # noqa: E402
from muster.events import (  # noqa: E402
    AccountCreated,
    AccountFollowed,
    AnyEvent,
    PostPublished,
    RollCall,
    RollCallOption,
    utcnow,
)
from muster.ids import IdGenerator  # noqa: E402
from muster.projections.timeline import Timeline  # noqa: E402
from muster.replies import ReplyAddresses  # noqa: E402
from muster.settings import Settings  # noqa: E402
from muster.writeside import WriteSide  # noqa: E402

SECRET = "bench-mail-in-" + "x7Qp2LmZ9rT4vK8sN3wY6bH1jC5dF0gA"
DOMAIN = "reply.bench.test"
CHUNK = 2000


async def build(settings: Settings, n: int, ids: IdGenerator) -> str:
    """N people following `ops` by email, and a roll-call post of `ops`; its id."""
    redis = async_client(settings)
    writeside = WriteSide(redis, partitions=settings.partitions)
    timeline = Timeline(redis, settings, announce=False)
    now = utcnow()
    batch: list[AnyEvent] = [
        AccountCreated(id=ids.next(), actor="admin", at=now, handle="ops",
                       account_id=ids.next(), kind="team")
    ]  # fmt: skip
    follows: list[AnyEvent] = []
    for i in range(n):
        handle = f"p{i}"
        batch.append(
            AccountCreated(id=ids.next(), actor="admin", at=now, handle=handle,
                           account_id=ids.next(), kind="person", role="member",
                           email=f"{handle}@example.test")
        )  # fmt: skip
        follows.append(
            AccountFollowed(id=ids.next(), actor=handle, at=now, follower=handle, account="ops",
                            channels=("app", "email"), seq=1)
        )  # fmt: skip
    for start in range(0, len(batch + follows), CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for event in (batch + follows)[start : start + CHUNK]:
                await writeside.apply(pipe, event)
            await pipe.execute()
    for start in range(0, len(follows), CHUNK):
        await timeline.apply_batch(follows[start : start + CHUNK])
    options = (
        RollCallOption(key="safe", label="I'm safe", kind="ok"),
        RollCallOption(key="help", label="I need help", kind="help"),
    )
    post = PostPublished(id=ids.next(), actor="pat", at=utcnow(), author="pat", as_account="ops",
                         text="Are you safe?",
                         rollcall=RollCall(options=options, deadline=now + timedelta(hours=1),
                                           grace_s=3600))  # fmt: skip
    await timeline.apply_batch([post])
    await redis.aclose()
    return post.id


def reply_of(handle: str, address: str, post_id: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = f"{handle}@example.test"
    mail["To"] = address
    mail["Subject"] = "Re: [INFO] @ops: Are you safe?"
    mail["Message-ID"] = f"<{handle}.{post_id}@client.bench.test>"
    mail.set_content(
        "safe\n\n-- \nSent from my phone\n\n"
        "On Sun, 6 Dec 2026 at 09:00, Muster <alerts@bench.test> wrote:\n> Are you safe?\n"
    )
    return mail.as_bytes(policy=SMTP)


async def send_all(
    port: int, messages: list[tuple[str, str, bytes]], connections: int
) -> list[int]:
    """Every message over `connections` kept sessions; each exchange's time in µs."""
    queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
    for item in messages:
        queue.put_nowait(item)
    took: list[int] = []

    async def session() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, start_tls=False)
        await client.connect()
        try:
            while True:
                try:
                    sender, rcpt, data = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter_ns()
                await client.sendmail(sender, [rcpt], data)
                took.append((time.perf_counter_ns() - started) // 1000)
        finally:
            with contextlib.suppress(aiosmtplib.SMTPException):
                await client.quit()

    await asyncio.gather(*(session() for _ in range(connections)))
    return took


async def answered(settings: Settings, post_id: str) -> tuple[int, int]:
    redis = async_client(settings)
    try:
        answers = email = 0
        for p in range(settings.partitions):
            counts = await redis.hgetall(keys.rollcall_counts(p, post_id))
            answers += int(counts.get(b"answered", 0))
            email += int(counts.get(b"ch:email", 0))
        return answers, email
    finally:
        await redis.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        server = start_redis_server(Path(tmp), appendonly=True, appendfsync="always")
        stack.callback(server.stop)
        settings = Settings(redis_url=server.url, partitions=args.partitions)
        ids = IdGenerator(1)
        print(f"building {args.people:,} people and a roll-call of @ops ...")
        post_id = asyncio.run(build(settings, args.people, ids))
        port = free_port()
        env = clean_env(
            redis_url=server.url,
            partitions=str(args.partitions),
            mail_in_address=f"127.0.0.1:{port}",
            mail_in_secret=SECRET,
            mail_in_domain=DOMAIN,
            log_level="warning",
        )
        log = Path(tmp) / "mail-in.log"
        process = spawn(stack, muster("mail-in"), env, log)
        wait_for_port(port, process, log)
        replies = ReplyAddresses(SECRET, DOMAIN, 30)
        messages = []
        for i in range(args.people):
            handle = f"p{i}"
            address = replies.address(handle, post_id)
            messages.append((f"{handle}@example.test", address, reply_of(handle, address, post_id)))
        load_before = os.getloadavg()[0]
        cpu_before = cpu_ticks(process.pid)
        started = time.perf_counter()
        took = asyncio.run(send_all(port, messages, args.connections))
        elapsed = time.perf_counter() - started
        cpu = (cpu_ticks(process.pid) - cpu_before) / os.sysconf("SC_CLK_TCK")
        total, by_email = asyncio.run(answered(settings, post_id))
        took.sort()
        print(
            f"{args.people:,} answers by email over {args.connections} SMTP connections, "
            f"{args.partitions} partitions: {args.people / elapsed:,.0f} answers/s, "
            f"p50 {percentile(took, 50) / 1000:.1f} ms, p99 {percentile(took, 99) / 1000:.1f} ms "
            f"per message; mail-in used {cpu / elapsed:.0%} of a core; "
            f"load average {load_before:.2f} before"
        )
        print(f"report: answered {total:,}, by email {by_email:,}")
        return 0 if total == by_email == args.people else 1


if __name__ == "__main__":
    sys.exit(main())
