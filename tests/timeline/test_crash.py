"""SIGKILL the timeline worker while it fans a post out to 20,000 followers, or while it
expands an enrolment of 50,000 members; start another.

The worker is the real `muster worker timeline` process. The follower graph is written
directly (the api path would take minutes): one follow goes through the real projection
(`Timeline.apply` of an AccountFollowed) and the other 19,999 are copied from it, with the
write-side follow record the api keeps (keys.follows) — the same state the real path leaves.

The test watches the database size while the first worker fans out, pausing every client's
writes (CLIENT PAUSE WRITE) for each look, and kills the worker while paused as soon as the
first homes appear: the post's event is then pending, some homes have it and some not, and
nothing was announced live — the same state whatever the machine's speed. A new worker reclaims the entry after MUSTER_CLAIM_IDLE_MS and
handles it again: every follower's home must then hold the post exactly once, the pending
list must be empty and the post announced once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from harness import HttpStack, app_running, asgi_client
from redis_server import RedisServer, die_with_parent

from muster import events, keys
from muster.connection import text
from muster.ids import IdGenerator
from muster.projections.timeline import Timeline
from muster.records import Follow, decode_request
from muster.settings import Settings
from muster.timeline.worker import GROUP
from muster.writeside import WriteSide

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FOLLOWERS = 20_000
PARTITIONS = 2
CLAIM_IDLE_MS = 1000
_ids = IdGenerator(node=11)


def muster_command() -> list[str]:
    script = Path(sys.executable).with_name("muster")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "muster.cli"]


class WorkerProcess:
    """One `muster worker timeline` process, logging to a file for post-mortems."""

    def __init__(self, server: RedisServer, tmp_path: Path, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
        # no .env from the working directory; no metrics listener on the shared default port
        env.update(MUSTER_ENV_FILE=os.devnull, MUSTER_METRICS_ADDRESS="off")
        env.update(
            MUSTER_REDIS_URL=server.url,
            MUSTER_PARTITIONS=str(PARTITIONS),
            MUSTER_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS),
            MUSTER_CONSUMER_BLOCK_MS="100",
            MUSTER_MAX_ATTEMPTS="3",
            MUSTER_FANOUT_ON_READ_THRESHOLD=str(FOLLOWERS * 10),  # fanned out on write
            MUSTER_LOG_FORMAT="json",
            MUSTER_DATA_DIR=str(tmp_path / "var"),
        )
        self.name = name
        self.log_path = tmp_path / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*muster_command(), "worker", "timeline"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        assert self.process.wait(timeout=10) == -signal.SIGKILL

    def terminate(self, timeout: float = 10.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout}s") from None


@asynccontextmanager
async def worker_processes(
    server: RedisServer, tmp_path: Path
) -> AsyncIterator[Callable[[str], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(name: str) -> WorkerProcess:
        started.append(WorkerProcess(server, tmp_path, name))
        return started[-1]

    try:
        yield start
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.kill()
            worker.process.wait(timeout=10)


async def wait_until(
    condition: Callable[[], object], what: str, *, within: float, alive: WorkerProcess
) -> None:
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        alive.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {within}s waiting until {what}; {alive.name} log:\n"
                + alive.log_tail()
            )
        await asyncio.sleep(0.002)


def home_key(handle: str) -> str:
    return keys.home(keys.partition_of(handle, PARTITIONS), handle)


async def homes_with(redis: aioredis.Redis, handles: list[str], post_id: str) -> list[int]:
    """For each handle: 1 if its home holds post_id, else 0."""
    async with redis.pipeline(transaction=False) as pipe:
        for handle in handles:
            pipe.zscore(home_key(handle), keys.home_member(post_id))
        scores = await pipe.execute()
    return [0 if s is None else 1 for s in scores]


async def home_sizes(redis: aioredis.Redis, handles: list[str]) -> list[int]:
    async with redis.pipeline(transaction=False) as pipe:
        for handle in handles:
            pipe.zcard(home_key(handle))
        sizes: list[int] = await pipe.execute()
    return sizes


async def build_graph(redis: aioredis.Redis, settings: Settings, handles: list[str]) -> None:
    """`handles` follow `ops`: the first through the projection, the rest copied from it."""
    first = handles[0]
    await Timeline(redis, settings).apply(
        events.AccountFollowed(
            id=_ids.next(), actor=first, at=events.utcnow(), follower=first, account="ops"
        )
    )
    projected = await redis.hget(keys.followers(keys.partition_of(first, PARTITIONS), "ops"), first)
    assert projected == b"app"
    record = Follow("ops", ("app",), False).encode()  # what writes.follow stores for the api
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(keys.follows(keys.partition_of(first, PARTITIONS), first), "ops", record)
        for handle in handles[1:]:
            q = keys.partition_of(handle, PARTITIONS)
            pipe.hset(keys.followers(q, "ops"), handle, projected)
            pipe.hset(keys.follows(q, handle), "ops", record)
        await pipe.execute()
    counts = [
        await redis.hlen(keys.followers(q, "ops"))
        + await redis.hlen(keys.external_followers(q, "ops"))
        for q in range(PARTITIONS)
    ]
    assert sum(counts) == len(handles)
    assert min(counts) > 0  # both partitions hold followers


def event_log_streams() -> list[str]:
    return [s for p in range(PARTITIONS) for s in (keys.events(p), keys.retry(p, GROUP))]


async def pending(redis: aioredis.Redis) -> int:
    total = 0
    for stream in event_log_streams():
        if await redis.exists(stream):
            total += int((await redis.xpending(stream, GROUP))["pending"])
    return total


async def live_posts(redis: aioredis.Redis) -> list[str]:
    entries: Any = await redis.xrange(keys.LIVE)
    return [text(fields[b"id"]) for _, fields in entries if fields.get(b"kind") == b"post"]


async def test_sigkill_mid_fanout_then_every_follower_has_the_post_once(
    redis_server: RedisServer, aredis: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    settings = msgspec.structs.replace(
        settings, partitions=PARTITIONS, fanout_on_read_threshold=FOLLOWERS * 10
    )
    handles = [f"f{n:05d}" for n in range(FOLLOWERS)]
    await build_graph(aredis, settings, handles)

    post = events.PostPublished(
        id=_ids.next(),
        actor="pat",
        at=events.utcnow(),
        author="pat",
        as_account="ops",
        text="all hands: incident bridge is open",
    )
    stream = keys.events(keys.partition_of("ops", PARTITIONS))

    async def groups_ready() -> bool:
        for name in event_log_streams():
            if not await aredis.exists(name):
                return False
            groups = await aredis.xinfo_groups(name)
            if not any(text(g["name"]) == GROUP for g in groups):
                return False
        return True

    async with worker_processes(redis_server, tmp_path) as start:
        first = start("A")
        await wait_until(groups_ready, "A creates its groups", within=30, alive=first)
        before = int(await aredis.dbsize())
        await aredis.xadd(stream, {events.STREAM_FIELD: events.encode(post)})

        homes_seen = 0

        async def frozen_mid_fanout() -> bool:
            # Each look pauses every client's writes (scripts included) first, so what it
            # sees is what the worker will have done when it dies. Once anything was written
            # (the post record comes first), it counts the follower homes holding the post.
            nonlocal homes_seen
            await aredis.client_pause(60_000, all=False)  # lifted below, however long a look takes
            if int(await aredis.dbsize()) > before:
                homes_seen = sum(await homes_with(aredis, handles, post.id))
                if homes_seen > 0:
                    return True  # stays paused until A is dead
            await aredis.client_unpause()
            return False

        try:
            await wait_until(frozen_mid_fanout, "A starts the fan-out", within=10, alive=first)
            first.kill()
        finally:
            await aredis.client_unpause()

        reached = sum(await homes_with(aredis, handles, post.id))
        assert reached == homes_seen  # A did nothing more after the look
        assert 0 < reached < FOLLOWERS, f"not killed mid fan-out: {reached} homes reached"
        assert await live_posts(aredis) == []  # announced only after the fan-out
        assert await pending(aredis) == 1  # the dead worker's, to be reclaimed

        second = start("B")

        async def done() -> bool:
            if await pending(aredis) != 0:
                return False
            return sum(await homes_with(aredis, handles, post.id)) == FOLLOWERS

        await wait_until(done, "B reclaims and finishes the fan-out", within=30, alive=second)
        assert second.terminate() == 0

    assert await homes_with(aredis, handles, post.id) == [1] * FOLLOWERS
    assert await home_sizes(aredis, handles) == [1] * FOLLOWERS  # exactly once, nothing else
    assert await aredis.zrange(home_key("pat"), 0, -1) == [keys.home_member(post.id).encode()]
    log = keys.account_log(keys.partition_of("ops", PARTITIONS), "ops")
    assert await aredis.zrange(log, 0, -1) == [post.id.encode()]
    assert await live_posts(aredis) == [post.id]  # announced once
    assert await pending(aredis) == 0
    for p in range(PARTITIONS):
        assert await aredis.xlen(keys.dead_letters(p)) == 0
    holding = [
        row for row in await aredis.xinfo_consumers(stream, GROUP) if int(row["pending"]) != 0
    ]
    assert holding == []  # not even the dead worker's consumer holds anything


# --- an enrolment of every member, killed mid-expansion -------------------------------------
MEMBERS = 50_000
REACHABLE_EVERY = 500  # one member in 500 has a phone: the critical post's SMS goes to them


class AdminStack(HttpStack):
    admin_token = "adm-E7n2Rq9xK4vB8nZ3cR6yL1pH5jD0sFgW"


async def build_members(redis: aioredis.Redis, settings: Settings, handles: list[str]) -> None:
    """`handles` as member accounts, with the write-side state the api's AccountCreated
    leaves (WriteSide.apply, the very function) and their reach sets projected (Timeline)."""
    side = WriteSide(redis, partitions=PARTITIONS)
    timeline = Timeline(redis, settings)
    for start in range(0, len(handles), 2000):
        created = [
            events.AccountCreated(
                id=(account_id := _ids.next()),
                actor="admin",
                at=events.utcnow(),
                handle=handle,
                account_id=account_id,
                kind="person",
                role="member",
                phone="+15550001234" if n % REACHABLE_EVERY == 0 else None,
            )
            for n, handle in enumerate(handles[start : start + 2000], start)
        ]
        async with redis.pipeline(transaction=False) as pipe:
            for event in created:
                await side.apply(pipe, event)
            await pipe.execute()
        await timeline.apply_batch(created)


async def enrolled_so_far(redis: aioredis.Redis, enrolment: str) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for q in range(PARTITIONS):
            pipe.scard(keys.enrolment_done(q, enrolment))
        sizes: list[int] = await pipe.execute()
    return sum(sizes)


async def commands_served(redis: aioredis.Redis) -> int:
    stats: dict[str, Any] = await redis.info("commandstats")
    return sum(int(row["calls"]) for row in stats.values())


async def test_sigkill_mid_enrolment_then_every_member_is_enrolled_once_and_alerted(
    redis_server: RedisServer, aredis: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """An admin enrols every member (50,000) in `ops` with SMS, mandatory, and posts a
    critical alert right after. The api answers with the same few commands whatever the
    member count. A timeline worker is killed while it expands the enrolment; another one
    finishes: every member is enrolled exactly once (one FollowerEnrolled, one follow record,
    one follower entry), and every member with a phone gets the alert's SMS request once."""
    settings = msgspec.structs.replace(
        settings, partitions=PARTITIONS, fanout_on_read_threshold=FOLLOWERS * 10
    )
    handles = [f"m{n:05d}" for n in range(MEMBERS)]
    await build_members(aredis, settings, handles)
    reachable = {h for n, h in enumerate(handles) if n % REACHABLE_EVERY == 0}
    token = AdminStack.admin_token
    api_settings = msgspec.structs.replace(settings, admin_token=token)
    async with app_running(api_settings) as app, asgi_client(app) as client:
        s = AdminStack(client=client, redis=aredis, settings=api_settings)
        await s.team("ops", "admin")
        before = await commands_served(aredis)
        enrolment = await s.ok(
            "PUT",
            "/v1/accounts/ops/enrolments",
            202,
            token=token,
            json={"followers": "all_members", "channels": ["sms"], "mandatory": True},
        )
        used = await commands_served(aredis) - before
        assert enrolment["followers"] == MEMBERS + 1  # and the bootstrap admin
        assert used <= 40, f"the enrolment took {used} Redis commands"
        alert = await s.post(token, "evacuate building 4", as_="ops", severity="critical")

    async with worker_processes(redis_server, tmp_path) as start:
        first = start("A")

        async def frozen_mid_expansion() -> bool:
            await aredis.client_pause(60_000, all=False)  # lifted below
            if await enrolled_so_far(aredis, enrolment["id"]) > 0:
                return True  # stays paused until A is dead
            await aredis.client_unpause()
            return False

        try:
            await wait_until(frozen_mid_expansion, "A expands", within=60, alive=first)
            first.kill()
        finally:
            await aredis.client_unpause()
        reached = await enrolled_so_far(aredis, enrolment["id"])
        assert 0 < reached < MEMBERS, f"not killed mid-expansion: {reached} enrolled"

        second = start("B")
        followers = [keys.followers(q, "ops") for q in range(PARTITIONS)]

        async def done() -> bool:
            if await pending(aredis) != 0:
                return False
            counts = [int(await aredis.hlen(name)) for name in followers]
            return sum(counts) == MEMBERS + 1

        await wait_until(done, "B finishes the enrolment", within=180, alive=second)
        assert second.terminate() == 0

    found: list[events.FollowerEnrolled] = []
    for q in range(PARTITIONS):
        entries: Any = await aredis.xrange(keys.events(q))
        for _, fields in entries:
            event = events.decode(fields[events.STREAM_FIELD])
            if isinstance(event, events.FollowerEnrolled):
                found.append(event)
    assert all(e.enrolment == enrolment["id"] for e in found)
    assert sorted(e.follower for e in found) == sorted([*handles, "admin"])  # once each
    async with aredis.pipeline(transaction=False) as pipe:
        for handle in handles:
            pipe.hget(keys.follows(keys.partition_of(handle, PARTITIONS), handle), "ops")
        records = await pipe.execute()
    assert set(records) == {b"app,sms|1"}
    requests: list[str] = []
    for q in range(PARTITIONS):
        entries = await aredis.xrange(keys.deliveries(q, "sms"))
        for _, fields in entries:
            request = decode_request(fields[events.STREAM_FIELD])
            assert request.message_id == alert["id"]
            requests.append(request.recipient)
    assert sorted(requests) == sorted(reachable)
    for q in range(PARTITIONS):
        assert await aredis.xlen(keys.dead_letters(q)) == 0
