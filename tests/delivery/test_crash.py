"""Guarantee 2, with real worker processes: a crash at each point of the send path.

`muster worker delivery` runs as a subprocess with MUSTER_FAILPOINTS naming one point; it
dies there (exit 137, no cleanup) on its first message. A second worker, without failpoints,
reclaims what the first left pending and finishes. Then, per channel:

- `delivery.before_send`: nothing had been sent — every message arrives exactly once;
- `delivery.after_send`: the provider had accepted messages Muster had not recorded — they
  arrive twice, with the same webhook-id / Message-ID / Idempotency-Key, and nothing else is
  duplicated or missing;
- `delivery.after_record`: recorded, not acknowledged — the second worker sends nothing again.

And a plain SIGKILL in the middle of a batch (requests in flight at a slow receiver), with
another worker taking over: every message arrives, any duplicate carries the same identity.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import pytest
from redis_server import die_with_parent
from standardwebhooks.webhooks import Webhook

from delivery.conftest import OpenStack, Peers, Stack, deliveries_idle, hash_field
from delivery.peers import TwilioFake
from muster import keys
from muster.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

READERS = ("ann", "bob", "cid", "dee")
POSTS = 3


class WorkerProcess:
    """`muster worker delivery` with the test's settings in its environment, logging to a file."""

    def __init__(self, settings: Settings, peers: Peers, log: Path, *failpoints: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
        # no .env from the working directory; no metrics listener on the shared default port
        env.update(MUSTER_ENV_FILE=os.devnull, MUSTER_METRICS_ADDRESS="off")
        env.update(
            MUSTER_REDIS_URL=str(settings.redis_url),
            MUSTER_PARTITIONS=str(settings.partitions),
            MUSTER_PUBLIC_URL=settings.public_url,
            MUSTER_SMTP_URL=peers.smtp.url,
            MUSTER_MAIL_FROM="alerts@muster.test",
            MUSTER_SMS_PROVIDER="twilio",
            MUSTER_TWILIO_BASE_URL=peers.sms.url,
            MUSTER_TWILIO_ACCOUNT_SID=TwilioFake.SID,
            MUSTER_TWILIO_AUTH_TOKEN=TwilioFake.TOKEN,
            MUSTER_TWILIO_FROM=TwilioFake.FROM,
            MUSTER_WEBHOOK_ALLOW_PRIVATE="1",
            # Long enough that a batch still in hand on a busy machine is never taken back
            # (a second send), short enough that the second worker soon finishes the first's.
            MUSTER_CLAIM_IDLE_MS="3000",
            MUSTER_CONSUMER_BLOCK_MS="100",
            MUSTER_CONSUMER_BATCH="5",
            MUSTER_MAX_ATTEMPTS="3",
            MUSTER_DELIVERY_RETRY_SCHEDULE="1,1,1",
            MUSTER_LOG_FORMAT="json",
            MUSTER_FAILPOINTS=",".join(failpoints),
        )
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "muster.cli", "worker", "delivery"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def exited(self, within: float = 20.0) -> int:
        deadline = time.monotonic() + within
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker did not exit within {within}s:\n{self.tail()}")
            await asyncio.sleep(0.02)
        return code

    async def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await self.exited(15.0)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)


@asynccontextmanager
async def worker(
    settings: Settings, peers: Peers, log: Path, *failpoints: str
) -> AsyncIterator[WorkerProcess]:
    process = WorkerProcess(settings, peers, log, *failpoints)
    try:
        yield process
    finally:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait(timeout=10)


async def routed_requests(
    s: Stack, peers: Peers, channels: tuple[str, ...]
) -> tuple[set[str], dict[str, str]]:
    """POSTS posts by pat to READERS following on `channels`; the expected delivery ids and
    each reader's webhook secret. Routed, not yet delivered (no delivery worker runs yet)."""
    author = (await s.account("pat"))["token"]
    secrets = {}
    for i, name in enumerate(READERS):
        reader = await s.account(
            name,
            email=f"{name}@example.test",
            phone=f"+1555000100{i}",
            webhook_url=peers.hook(name),
        )
        secrets[name] = reader["webhook_secret"]
        await s.follow(reader["token"], "pat", *channels)
    posts = [(await s.post(author, f"update number {n}"))["id"] for n in range(POSTS)]
    await s.routed()
    return {f"{p}.{r}.{c}" for p in posts for r in READERS for c in channels}, secrets


def arrivals(peers: Peers, channel: str) -> Counter[str]:
    """Delivery id → how many times the peer accepted it."""
    if channel == "webhook":
        return peers.webhooks.ids()
    if channel == "sms":
        return Counter({k or "": n for k, n in peers.sms.keys().items()})
    return Counter({k.strip("<>").split("@")[0]: n for k, n in peers.smtp.ids().items()})


def identical_duplicates(peers: Peers, channel: str) -> None:
    """A resend is the same message: same body (webhook, SMS) or same Message-ID and text."""
    if channel == "webhook":
        by_id: dict[str, set[bytes]] = {}
        for r in peers.webhooks.accepted():
            by_id.setdefault(r.headers["webhook-id"], set()).add(r.body)
        assert all(len(bodies) == 1 for bodies in by_id.values())
    elif channel == "sms":
        texts: dict[str | None, set[tuple[str, str]]] = {}
        for m in peers.sms.messages:
            texts.setdefault(m.idempotency_key, set()).add((m.to, m.body))
        assert all(len(t) == 1 for t in texts.values())
    else:
        mails: dict[str, set[str]] = {}
        for mail in peers.smtp.mails:
            mails.setdefault(str(mail.message["Message-ID"]), set()).add(mail.message.as_string())
        assert all(len(t) == 1 for t in mails.values())


async def statuses(s: Stack, expected: set[str]) -> Counter[str]:
    found: Counter[str] = Counter()
    for delivery_id in expected:
        message_id, recipient, channel = delivery_id.split(".")
        q = keys.partition_of(recipient, s.settings.partitions)
        raw = await hash_field(
            s.redis, keys.delivery_status(q, message_id), f"{recipient}:{channel}"
        )
        found[raw.split("|")[0]] += 1
    return found


async def finish_with_a_second_worker(s: Stack, peers: Peers, tmp_path: Path) -> None:
    async with worker(s.settings, peers, tmp_path / "second.log") as second:
        deadline = time.monotonic() + 30
        while not await deliveries_idle(s.redis, s.settings.partitions):
            assert second.process.poll() is None, second.tail()
            assert time.monotonic() < deadline, (
                "the second worker did not finish:\n" + second.tail()
            )
            await asyncio.sleep(0.05)
        assert await second.stop() == 0, second.tail()


@pytest.mark.parametrize("channel", ["webhook", "sms", "email"])
@pytest.mark.parametrize(
    "failpoint", ["delivery.before_send", "delivery.after_send", "delivery.after_record"]
)
async def test_a_crash_at_each_point_of_the_send_path(
    delivery_settings: Settings,
    open_stack: OpenStack,
    peers: Peers,
    tmp_path: Path,
    failpoint: str,
    channel: str,
) -> None:
    async with open_stack(delivery_settings, delivery=False) as s:
        expected, secrets = await routed_requests(s, peers, (channel,))
        async with worker(s.settings, peers, tmp_path / "first.log", failpoint) as first:
            assert await first.exited() == 137, first.tail()
            assert f"failpoint {failpoint} hit" in first.tail()
        before = arrivals(peers, channel)
        await finish_with_a_second_worker(s, peers, tmp_path)

        got = arrivals(peers, channel)
        assert set(got) == expected  # every message arrived, nothing else did
        duplicated = {d for d, n in got.items() if n > 1}
        if failpoint == "delivery.after_send":
            assert before, "the first worker died after a send: the peer has it"
            assert duplicated, "what was accepted but not recorded is sent again"
            assert duplicated <= set(before)
            assert max(got.values()) == 2
        else:
            assert not duplicated, got
        if failpoint == "delivery.before_send":
            assert not before
        identical_duplicates(peers, channel)
        if channel == "webhook":
            for r in peers.webhooks.accepted():
                recipient = r.path.rsplit("/", 1)[1]
                Webhook(secrets[recipient]).verify(r.body, r.headers)
        assert await statuses(s, expected) == {"sent": len(expected)}
        assert not await s.dead()


async def test_sigkill_mid_batch_and_another_worker_takes_over(
    delivery_settings: Settings, open_stack: OpenStack, peers: Peers, tmp_path: Path
) -> None:
    settings = msgspec.structs.replace(delivery_settings, partitions=2)
    peers.webhooks.delay_s = 0.3  # requests in flight when the kill comes
    channels = ("webhook", "sms", "email")
    async with open_stack(settings, delivery=False) as s:
        expected, _ = await routed_requests(s, peers, channels)
        async with worker(s.settings, peers, tmp_path / "first.log") as first:
            deadline = time.monotonic() + 20
            while len(peers.webhooks.arrived) < 2:
                assert first.process.poll() is None, first.tail()
                assert time.monotonic() < deadline, (
                    "no webhook reached the receiver:\n" + first.tail()
                )
                await asyncio.sleep(0.01)
            first.process.send_signal(signal.SIGKILL)
            assert await first.exited() == -signal.SIGKILL
        in_flight = {r.headers["webhook-id"] for r in peers.webhooks.arrived}
        await finish_with_a_second_worker(s, peers, tmp_path)
        await asyncio.sleep(0.5)  # requests the dead worker left at the receiver are answered

        for channel in channels:
            got = arrivals(peers, channel)
            want = {e for e in expected if e.endswith(f".{channel}")}
            assert set(got) == want, channel
            assert max(got.values()) <= 2
            identical_duplicates(peers, channel)
        assert in_flight <= set(arrivals(peers, "webhook"))
        assert await statuses(s, expected) == {"sent": len(expected)}
        assert not await s.dead()
