"""Delivery benchmark: webhooks/s, SMS/s and emails/s, Muster's delivery worker against rq.

    python tests/benchmarks/delivery.py [--messages N] [--rq-messages M] [--repeats R]
                                        [--channels webhook,sms,email]

Not a test (pytest does not collect it): a command that prints figures. In one run it
1. starts its own redis-server on a free loopback port in a temp dir (no AOF, no RDB), and
   the local peers of tests/benchmarks/sinks.py in a process of their own: one keep-alive
   HTTP server that takes the webhooks and the Twilio-compatible SMS API, one SMTP server;
2. writes N recipient accounts (email, phone, webhook URL + secret) and one post, the way
   the api and the timeline worker store them;
3. per channel, ours: a real `muster worker delivery` process (the CLI, default settings
   but MUSTER_WEBHOOK_ALLOW_PRIVATE=1 to reach 127.0.0.1) is already running and idle; N
   DeliveryRequested entries are appended to the channel's delivery stream at once and the
   clock runs until the worker has acknowledged all N (each after the sink accepted it) —
   signed webhooks over keep-alive connections, Twilio form posts, SMTP over kept sessions,
   statuses recorded. Rate = N / that time;
4. per channel, rq: "one rq job per message" — M jobs enqueued (untimed), then one rq
   SimpleWorker (no fork per job: rq's fastest worker) in this process works the queue in
   burst mode, timed. Each job does the same work as ours for one message: reads the post
   and the account from Redis, renders and signs with Muster's own functions, sends over a
   connection kept across jobs (httpx.Client / smtplib.SMTP: generous to rq), records the
   status;
5. repeats 3 and 4 R times (default 3), interleaved, so both sides see the same machine
   (other load on it moves both), and prints each run, then per channel the median
   messages/s of both and their ratio, and whether the sinks received every message with
   a distinct id each time. Goals (issue 4): ours ≥ 10 x rq on every channel, and
   ≥ 3,000 webhooks/s. Exit status 1 if a message is missing.
"""

from __future__ import annotations

import argparse
import base64
import os
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: the suite's redis_server helper

import httpx  # noqa: E402
import redis  # noqa: E402
from benchmarks._peers import (  # noqa: E402
    FROM,
    PUBLIC_URL,
    SID,
    TOKEN,
    Sinks,
    group_acked,
    start_worker,
    wait_group,
)
from redis_server import start_redis_server  # noqa: E402
from rq import Queue, SimpleWorker  # noqa: E402

from muster import events, keys, views  # noqa: E402
from muster.delivery import email as mail  # noqa: E402
from muster.delivery.content import ACCOUNT_FIELDS, Recipient, decode_content  # noqa: E402
from muster.delivery.sms import sms_text  # noqa: E402
from muster.delivery.webhook import body_of, signature  # noqa: E402
from muster.ids import IdGenerator  # noqa: E402
from muster.records import DeliveryRequest, encode_request  # noqa: E402

CHANNELS = ("webhook", "sms", "email")
GOAL_RATIO = 10.0
GOAL_WEBHOOKS = 3000.0
SECRET = "whsec_" + base64.b64encode(b"benchmark-secret-32-bytes-long!!").decode()
POST_TEXT = (
    "Incident: the EU payment gateway is degraded; card payments fail for about 8% of "
    "requests. Mitigation in progress, next update in 15 minutes."
)


def log(message: str) -> None:
    print(message, flush=True)


# --- fixtures in Redis ----------------------------------------------------------------------
def recipients(n: int) -> list[str]:
    return [f"r{i:06d}" for i in range(n)]


def seed(client: redis.Redis, n: int, http_url: str) -> str:
    """N accounts with every contact point, and one post; returns the post id."""
    post_id = IdGenerator(node=7).next()
    event = events.PostPublished(
        id=post_id,
        actor="ops",
        at=events.utcnow(),
        author="ops",
        as_account="ops",
        text=POST_TEXT,
        visibility="public",
        severity="critical",
    )
    client.set(keys.post(0, post_id), views.encode(views.post_of(event)))
    with client.pipeline(transaction=False) as pipe:
        for i, handle in enumerate(recipients(n)):
            pipe.hset(
                keys.account(0, handle),
                mapping={
                    "handle": handle,
                    "id": str(i),
                    "kind": "person",
                    "role": "member",
                    "email": f"{handle}@example.test",
                    "phone": f"+1555{i:07d}",
                    "webhook_url": f"{http_url}/hooks/{handle}",
                    "webhook_secret": SECRET,
                },
            )
        pipe.execute()
    return post_id


def request(post_id: str, handle: str, channel: str) -> bytes:
    return encode_request(
        DeliveryRequest(
            id=f"{post_id}.{handle}.{channel}",
            actor="ops",
            at=events.utcnow(),
            message_id=post_id,
            kind="post",
            recipient=handle,
            channel=channel,
        )
    )


# --- ours ---------------------------------------------------------------------------------------
def run_ours(
    client: redis.Redis, sinks: Sinks, post_id: str, channel: str, n: int
) -> tuple[float, tuple[int, int]]:
    stream = keys.deliveries(0, channel)
    sinks.reset()
    payloads = [request(post_id, h, channel) for h in recipients(n)]
    status_key = keys.delivery_status(0, post_id)
    client.hset(status_key, mapping={f"{h}:{channel}": "pending|0|" for h in recipients(n)})
    started = time.perf_counter()
    with client.pipeline(transaction=False) as pipe:
        for payload in payloads:
            pipe.xadd(stream, {events.STREAM_FIELD: payload})
        ids = pipe.execute()
    last = ids[-1].decode()
    deadline = time.monotonic() + 600
    while True:
        state = group_acked(client, stream)
        if state is not None and state[0] == last and state[1] == 0:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"ours did not finish {n} {channel} deliveries in 600 s")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    return elapsed, sinks.received(channel)


# --- rq: one job per message ------------------------------------------------------------------
class _RqState:
    """What one rq worker process keeps between jobs (connections, the signer)."""

    redis: redis.Redis
    http: httpx.Client
    smtp: smtplib.SMTP | None = None
    smtp_port: int


RQ = _RqState()


def rq_deliver(channel: str, message_id: str, handle: str) -> None:
    """One message, the way a job-per-message design sends it."""
    r = RQ.redis
    with r.pipeline(transaction=False) as pipe:
        pipe.get(keys.post(0, message_id))
        pipe.hmget(keys.account(0, handle), list(ACCOUNT_FIELDS))
        raw, values = pipe.execute()
    content = decode_content("post", message_id, raw)
    kind, role, email_to, phone, url, secret = (v.decode() if v else None for v in values)
    person = Recipient(handle, kind, role, email_to, phone, url, secret)
    delivery_id = f"{message_id}.{handle}.{channel}"
    if channel == "webhook":
        body, text = body_of(content)
        now = datetime.now(UTC)
        assert person.webhook_url
        assert person.webhook_secret
        response = RQ.http.post(
            person.webhook_url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "webhook-id": delivery_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature(person.webhook_secret, delivery_id, now, text),
            },
        )
    elif channel == "sms":
        response = RQ.http.post(
            f"/2010-04-01/Accounts/{SID}/Messages.json",
            data={"To": person.phone or "", "From": FROM, "Body": sms_text(content, PUBLIC_URL)},
            auth=(SID, TOKEN),
            headers={"Idempotency-Key": delivery_id},
        )
    else:
        if RQ.smtp is None:
            RQ.smtp = smtplib.SMTP("127.0.0.1", RQ.smtp_port, local_hostname="muster.bench")
        data = (
            f"To: {email_to}\r\nMessage-ID: {mail.message_id(delivery_id, PUBLIC_URL)}\r\n".encode()
        )
        data += mail.render(content, mail_from="alerts@muster.bench", public_url=PUBLIC_URL)
        RQ.smtp.sendmail("alerts@muster.bench", [email_to or ""], data)
        response = None
    if response is not None:
        response.raise_for_status()
    r.hset(keys.delivery_status(0, message_id), f"{handle}:{channel}", "sent|1|")


def run_rq(
    client: redis.Redis, sinks: Sinks, post_id: str, channel: str, m: int
) -> tuple[float, tuple[int, int]]:
    sinks.reset()
    queue = Queue(f"bench-{channel}", connection=client)
    queue.enqueue_many(
        [
            Queue.prepare_data(rq_deliver, args=(channel, post_id, h), result_ttl=60)
            for h in recipients(m)
        ]
    )
    worker = SimpleWorker([queue], connection=client)
    started = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    elapsed = time.perf_counter() - started
    return elapsed, sinks.received(channel)


# --- main ---------------------------------------------------------------------------------------
def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def goal_lines(channel: str, ours: float, rq: float) -> str:
    goals = [f"≥ {GOAL_RATIO:.0f} x rq: {'met' if ours >= GOAL_RATIO * rq else 'NOT met'}"]
    if channel == "webhook":
        goals.append(f"≥ {GOAL_WEBHOOKS:,.0f}/s: {'met' if ours >= GOAL_WEBHOOKS else 'NOT met'}")
    return f"goal {channel}: " + "; ".join(goals)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=10_000, help="per channel and run, ours")
    parser.add_argument("--rq-messages", type=int, default=1_000, help="per channel and run, rq")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, interleaved")
    parser.add_argument("--channels", default=",".join(CHANNELS))
    args = parser.parse_args()
    channels = [c for c in args.channels.split(",") if c]
    n, m = args.messages, args.rq_messages

    ok = True
    with tempfile.TemporaryDirectory(prefix="muster-bench-delivery-") as tmp:
        server = start_redis_server(Path(tmp) / "redis")
        sinks = Sinks()
        worker: subprocess.Popen[bytes] | None = None
        try:
            client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=30)
            post_id = seed(client, max(n, m), sinks.http_url)
            RQ.redis = client
            RQ.http = httpx.Client(base_url=sinks.http_url, timeout=10)
            RQ.smtp_port = sinks.smtp_port
            worker = start_worker(server.url, sinks, Path(tmp) / "worker.log")
            for channel in channels:
                wait_group(client, keys.deliveries(0, channel))
            log(
                f"delivery benchmark: {n} messages per channel and run (ours), {m} (rq), "
                f"{args.repeats} runs of each, interleaved; {os.cpu_count()} cores; "
                f"redis-server without persistence; load average before: {load_average()}"
            )
            rates: dict[str, tuple[list[float], list[float]]] = {c: ([], []) for c in channels}
            for run in range(1, args.repeats + 1):
                for channel in channels:
                    ours_s, ours_got = run_ours(client, sinks, post_id, channel, n)
                    rq_s, rq_got = run_rq(client, sinks, post_id, channel, m)
                    complete = ours_got == (n, n) and rq_got == (m, m)
                    ok = ok and complete
                    rates[channel][0].append(n / ours_s)
                    rates[channel][1].append(m / rq_s)
                    log(
                        f"  run {run} {channel}: ours {n / ours_s:,.0f}/s ({n} in {ours_s:.2f} s),"
                        f" rq {m / rq_s:,.0f}/s ({m} in {rq_s:.2f} s)"
                        + ("" if complete else f"  MISSING: ours got {ours_got}, rq got {rq_got}")
                    )
            log("")
            log("medians:")
            log("| channel | ours (msg/s) | rq SimpleWorker (msg/s) | ours / rq |")
            log("| --- | ---: | ---: | ---: |")
            medians = {
                c: (statistics.median(o), statistics.median(r)) for c, (o, r) in rates.items()
            }
            for channel, (ours, rq) in medians.items():
                log(f"| {channel} | {ours:,.0f} | {rq:,.0f} | {ours / rq:.1f} |")
            log(f"every message delivered, each id once: {'yes' if ok else 'NO'}")
            log(
                f"load average after: {load_average()} (other processes on these cores move both sides)"
            )
            for channel, (ours, rq) in medians.items():
                log(goal_lines(channel, ours, rq))
        finally:
            if worker is not None:
                worker.terminate()
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            close_rq(RQ)
            sinks.close()
            server.kill()
    return 0 if ok else 1


def close_rq(state: _RqState) -> None:
    http = getattr(state, "http", None)
    if http is not None:
        http.close()
    if state.smtp is not None:
        state.smtp.quit()


if __name__ == "__main__":
    sys.exit(main())
