"""Retries, dead letters and re-drives, against real peers that fail on purpose.

The retry schedule is short here (MUSTER_DELIVERY_RETRY_SCHEDULE of 1 s steps): a receiver
that fails a few times, or is down for a while, gets every message once it answers, with the
same webhook-id; one that always fails ends in the dead-letter stream with its last error,
and `muster dlq redrive` — the real command — delivers it once the receiver is fixed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from delivery.conftest import OpenStack, Peers, Stack, delivery_worker, hash_field, until
from delivery.peers import HttpReceiver
from muster import keys
from muster.settings import Settings

pytestmark = pytest.mark.anyio


async def status_of(s: Stack, message_id: str, recipient: str, channel: str) -> str:
    q = keys.partition_of(recipient, s.settings.partitions)
    return await hash_field(s.redis, keys.delivery_status(q, message_id), f"{recipient}:{channel}")


def muster(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    # no .env from the working directory; no metrics listener on the shared default port
    env.update(MUSTER_ENV_FILE=os.devnull, MUSTER_METRICS_ADDRESS="off")
    env.update(MUSTER_REDIS_URL=str(settings.redis_url), MUSTER_PARTITIONS=str(settings.partitions))
    return subprocess.run(
        [sys.executable, "-m", "muster.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_failing_receivers_get_it_on_a_retry_with_the_same_identity(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    peers.webhooks.fail_first = 2
    peers.sms.fail_first = 1
    author = (await s.account("pat"))["token"]
    mia = await s.account("mia", phone="+15551230001", webhook_url=peers.hook("mia"))
    await s.follow(mia["token"], "pat", "webhook", "sms")
    post = await s.post(author, "third time lucky")
    await s.delivered()

    tries = peers.webhooks.requests
    assert [r.status for r in tries] == [500, 500, 200]
    assert {r.headers["webhook-id"] for r in tries} == {f"{post['id']}.mia.webhook"}
    for attempt in tries:  # each try is signed afresh, and verifies
        Webhook(mia["webhook_secret"]).verify(attempt.body, attempt.headers)
    assert await status_of(s, post["id"], "mia", "webhook") == "sent|3|"
    assert peers.sms.calls == 2
    assert peers.sms.keys() == {f"{post['id']}.mia.sms": 1}
    assert await status_of(s, post["id"], "mia", "sms") == "sent|2|"
    assert not await s.dead()
    totals = await s.redis.hgetall(keys.DELIVERY_TOTALS)
    assert totals[b"webhook:retried"] == b"2"
    assert totals[b"webhook:sent"] == b"1"


async def test_peers_down_for_a_while_get_everything_once_they_are_back(
    delivery_settings: Settings, open_stack: OpenStack, peers: Peers
) -> None:
    settings = msgspec.structs.replace(
        delivery_settings, delivery_retry_schedule=(1, 1, 1, 1, 1, 1), partitions=2
    )
    async with open_stack(settings) as s:
        author = (await s.account("pat"))["token"]
        readers = [f"r{i}" for i in range(6)]
        for i, name in enumerate(readers):
            reader = await s.account(
                name,
                email=f"{name}@example.test",
                phone=f"+1555123000{i}",
                webhook_url=peers.hook(name),
            )
            await s.follow(reader["token"], "pat", "email", "sms", "webhook")
        await s.routed()
        await peers.webhooks.stop()
        await peers.sms.stop()
        await peers.smtp.stop()
        posts = [(await s.post(author, f"update {n}"))["id"] for n in range(5)]
        await s.routed()

        async def retried() -> bool:  # a few retries hit closed ports
            report = await s.deliveries(posts[0])
            return any(r["attempts"] >= 2 and r["last_error"] for r in report["recipients"])

        await until(retried, "a retry that failed")
        pending = await s.deliveries(posts[0])
        assert pending["totals"]["webhook"]["pending"] == 6
        await peers.webhooks.start()
        await peers.sms.start()
        await peers.smtp.start()
        await s.delivered(within=30)

        expected = {f"{p}.{r}" for p in posts for r in readers}
        assert peers.webhooks.ids() == {f"{e}.webhook": 1 for e in expected}
        assert peers.sms.keys() == {f"{e}.sms": 1 for e in expected}
        assert peers.smtp.ids() == {f"<{e}.email@muster.test>": 1 for e in expected}
        for post_id in posts:
            totals = (await s.deliveries(post_id))["totals"]
            assert totals == {
                c: {"pending": 0, "sent": 6, "logged": 0, "failed": 0} for c in keys.OFFAPP_CHANNELS
            }
        assert not await s.dead()


async def test_failures_past_the_schedule_and_permanent_ones_are_dead_lettered_and_redriven(
    stack: Stack, peers: Peers
) -> None:
    s = stack
    author = (await s.account("pat"))["token"]
    gone = await s.account("mia", webhook_url=peers.hook("mia"))  # 404 (a bad deploy), then fixed
    busy = await s.account("tom", webhook_url=peers.hook("tom"))  # 503 every time
    mail = await s.account("ann", email="nobody@example.test", phone="+15550000000")
    for reader in (gone, busy):
        await s.follow(reader["token"], "pat", "webhook")
    await s.follow(mail["token"], "pat", "email", "sms")
    peers.webhooks.status_for = {"/hooks/mia": 404, "/hooks/tom": 503}
    peers.smtp.refused.add("nobody@example.test")
    peers.sms.refused.add("+15550000000")
    post = (await s.post(author, "will not make it"))["id"]
    await s.delivered(within=30)

    dead = await s.dead()
    errors = [d["error"] for d in dead]
    assert len(dead) == 4, dead
    assert all(d["group"] == "delivery" for d in dead)
    assert any("gave up after 4 attempts" in e and "404" in e for e in errors)
    assert any("gave up after 4 attempts" in e and "503" in e for e in errors)
    assert any("550" in e for e in errors)
    assert any("SMS provider answered 400" in e for e in errors)
    assert await status_of(s, post, "mia", "webhook") == (
        "failed|4|gave up after 4 attempts: webhook answered 404 Not Found"
    )
    assert (await status_of(s, post, "tom", "webhook")).startswith("failed|4|gave up after 4")
    assert len([r for r in peers.webhooks.requests if r.path == "/hooks/tom"]) == 4
    assert len([r for r in peers.webhooks.requests if r.path == "/hooks/mia"]) == 4
    assert (await status_of(s, post, "ann", "email")).startswith("failed|1|SMTP server refused")
    report = await s.deliveries(post, status="failed")
    assert report["totals"]["webhook"] == {"pending": 0, "sent": 0, "logged": 0, "failed": 2}
    assert {(r["handle"], r["channel"]) for r in report["recipients"]} == {
        ("mia", "webhook"), ("tom", "webhook"), ("ann", "email"), ("ann", "sms"),
    }  # fmt: skip

    listed = muster(s.settings, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("delivery") >= 4

    peers.webhooks.status_for = {}
    peers.smtp.refused.clear()
    peers.sms.refused.clear()
    redriven = muster(s.settings, "dlq", "redrive", "--all")
    assert redriven.returncode == 0, redriven.stderr
    await s.delivered(within=30)

    assert not await s.dead()
    assert peers.webhooks.ids() == {f"{post}.mia.webhook": 1, f"{post}.tom.webhook": 1}
    assert peers.smtp.ids() == {f"<{post}.ann.email@muster.test>": 1}
    assert peers.sms.keys() == {f"{post}.ann.sms": 1}
    assert await status_of(s, post, "mia", "webhook") == "sent|5|"
    assert await status_of(s, post, "tom", "webhook") == "sent|5|"
    assert (await s.deliveries(post))["totals"]["webhook"] == {
        "pending": 0,
        "sent": 2,
        "logged": 0,
        "failed": 0,
    }

    # a re-drive after success sends nothing again
    assert muster(s.settings, "dlq", "redrive", "--all").returncode == 0
    await s.delivered()
    assert peers.webhooks.ids() == {f"{post}.mia.webhook": 1, f"{post}.tom.webhook": 1}


async def test_410_gone_disables_the_webhook_until_a_new_url(stack: Stack, peers: Peers) -> None:
    s = stack
    author = (await s.account("pat"))["token"]
    mia = await s.account("mia", email="mia@example.test", webhook_url=peers.hook("mia"))
    await s.follow(mia["token"], "pat", "webhook", "email")
    peers.webhooks.status_for = {"/hooks/mia": 410}
    first = (await s.post(author, "gone"))["id"]
    await s.delivered()
    assert await s.redis.sismember(keys.webhooks_disabled(0), "mia")
    assert "410" in (await status_of(s, first, "mia", "webhook"))
    assert len(await s.dead()) == 1

    second = (await s.post(author, "not to the webhook"))["id"]
    await s.delivered()
    assert len(peers.webhooks.requests) == 1
    assert peers.smtp.ids()[f"<{second}.mia.email@muster.test>"] == 1

    await s.ok(
        "PATCH", "/v1/me", token=mia["token"], json={"webhook_url": peers.hook("mia") + "/v2"}
    )
    third = (await s.post(author, "to the new URL"))["id"]
    await s.delivered()
    assert not await s.redis.sismember(keys.webhooks_disabled(0), "mia")
    assert peers.webhooks.ids() == {f"{third}.mia.webhook": 1}
    assert peers.webhooks.accepted()[0].path == "/hooks/mia/v2"


async def test_a_slow_receiver_is_deferred_never_reclaimed_and_sent_twice(
    delivery_settings: Settings, open_stack: OpenStack, peers: Peers
) -> None:
    """One connection to a receiver that takes 0.4 s a request, 12 requests in a batch: sent
    one after another they would take 4.8 s, past the 3 s claim timeout (the reclaimer looks
    every 1.5 s), and the unacknowledged rest would be handed out again — and sent twice.
    Sends that cannot get their destination's slot within the wait budget are deferred."""
    settings = msgspec.structs.replace(
        delivery_settings, http_host_connections=1, claim_idle_ms=3000, webhook_timeout_s=1
    )
    peers.webhooks.delay_s = 0.4
    async with open_stack(settings) as s:
        author = (await s.account("pat"))["token"]
        readers = [f"r{i:02d}" for i in range(12)]
        for name in readers:
            reader = await s.account(name, webhook_url=peers.hook(name))
            await s.follow(reader["token"], "pat", "webhook")
        post = (await s.post(author, "one at a time, please"))["id"]
        await s.delivered(within=40)
        await asyncio.sleep(1.0)  # a second copy would be on its way by now
        arrived = Counter(r.headers["webhook-id"] for r in peers.webhooks.arrived)
        assert arrived == {f"{post}.{r}.webhook": 1 for r in readers}
        assert peers.webhooks.ids() == arrived
        totals = await s.redis.hgetall(keys.DELIVERY_TOTALS)
        assert int(totals[b"webhook:deferred"]) >= 1
        assert int(totals[b"webhook:sent"]) == 12
        assert not await s.dead()


async def test_a_permanent_failure_never_makes_its_batch_neighbours_send_twice(
    delivery_settings: Settings, open_stack: OpenStack, peers: Peers
) -> None:
    """A batch holds a webhook that answers 410 (permanent) beside a dozen to a slow receiver
    (one connection, 0.4 s a request), most of which are deferred: put back in the delayed
    set, untried. Two delivery workers run, as when the kind is scaled out. The batch's
    outcome is per entry — the 410 one dead-lettered, the rest done — so nothing runs it
    again: each deferred request is sent once, from its copy, by whichever worker takes it.
    (When a failure made the loop re-run the batch message by message, the re-run sent the
    deferred requests while the other worker sent their copies: the same webhook-id twice.)"""
    settings = msgspec.structs.replace(
        delivery_settings, http_host_connections=1, claim_idle_ms=3000, webhook_timeout_s=1
    )
    peers.webhooks.delay_s = 0.4
    elsewhere = HttpReceiver()
    elsewhere.status_for = {"/hooks/gil": 410}
    await elsewhere.start()
    try:
        async with open_stack(settings) as s, delivery_worker(settings):
            author = (await s.account("pat"))["token"]
            gil = await s.account("gil", webhook_url=f"{elsewhere.url}/hooks/gil")
            await s.follow(gil["token"], "pat", "webhook")
            readers = [f"r{i:02d}" for i in range(12)]
            for name in readers:
                reader = await s.account(name, webhook_url=peers.hook(name))
                await s.follow(reader["token"], "pat", "webhook")
            post = (await s.post(author, "most of you will have to wait"))["id"]
            await s.delivered(within=60)
            await asyncio.sleep(1.0)  # a second copy would be on its way by now
            arrived = Counter(r.headers["webhook-id"] for r in peers.webhooks.arrived)
            assert arrived == {f"{post}.{r}.webhook": 1 for r in readers}
            totals = await s.redis.hgetall(keys.DELIVERY_TOTALS)
            assert int(totals[b"webhook:deferred"]) >= 1  # the case this test is about
            dead = await s.dead()
            assert len(dead) == 1
            assert f"{post}.gil.webhook" in dead[0]["error"]
            assert "410" in dead[0]["error"]
    finally:
        await elsewhere.stop()
