"""The consumer loop on a real redis-server: ack after the effect, retry, dead-letter, recover.

Timings come from the `settings` fixture (block 200 ms, claim idle 500 ms, 3 attempts), so a
retried entry is dead-lettered within about two seconds. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis_server import RedisFactory, RedisServer

from muster import dlq, events, keys
from muster.connection import async_client
from muster.consumer import ConsumerLoop, Failed, Handler, Message, Outcome, Outcomes
from muster.consumer import Retry as RetryLater
from muster.ids import IdGenerator
from muster.settings import Settings
from muster.worker import event_log_streams, loop_config

pytestmark = pytest.mark.anyio

SettingsFactory = Callable[..., Settings]

GROUP = "g"
STREAM = keys.events(0)
DEAD = keys.dead_letters(0)
STOP_TIMEOUT_S = 10.0
_ids = IdGenerator(node=1)


# --- helpers ----------------------------------------------------------------------------------
def post(text: str) -> events.PostPublished:
    return events.PostPublished(
        id=_ids.next(),
        actor="alice",
        at=events.utcnow(),
        author="alice",
        as_account="ops",
        text=text,
    )


def text_of(message: Message[Any]) -> str:
    assert isinstance(message.event, events.PostPublished)
    return message.event.text


async def append(client: aioredis.Redis, event: events.Event, stream: str = STREAM) -> str:
    return await append_raw(client, {events.STREAM_FIELD: events.encode(event)}, stream)


async def append_raw(
    client: aioredis.Redis, fields: dict[bytes, bytes], stream: str = STREAM
) -> str:
    entry_id = await client.xadd(stream, fields)  # type: ignore[arg-type]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def stream_id(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


async def pending(client: aioredis.Redis, stream: str = STREAM, group: str = GROUP) -> int:
    return int((await client.xpending(stream, group))["pending"])


class Recorder:
    """A handler that records each call and each success; raises for texts in `failing`."""

    def __init__(self, *failing: str) -> None:
        self.failing = set(failing)
        self.calls: list[list[Message[Any]]] = []
        self.handled: list[Message[Any]] = []

    async def __call__(self, messages: Sequence[Message[Any]]) -> None:
        self.calls.append(list(messages))
        for message in messages:
            if text_of(message) in self.failing:
                raise ValueError(f"poison {text_of(message)}")
        self.handled.extend(messages)

    def texts(self) -> list[str]:
        return sorted(text_of(m) for m in self.handled)


def make_loop(
    client: aioredis.Redis,
    settings: Settings,
    handler: Handler,
    *,
    group: str = GROUP,
    streams: Sequence[str] = (STREAM,),
) -> ConsumerLoop:
    return ConsumerLoop(
        client,
        streams=streams,
        group=group,
        handler=handler,
        dead_letters=DEAD,
        config=loop_config(settings),
    )


class Running:
    def __init__(self, loops: Sequence[ConsumerLoop]) -> None:
        self.stop = asyncio.Event()
        self.tasks = [asyncio.create_task(loop.run(self.stop)) for loop in loops]

    def check(self) -> None:
        """Fail at once if a loop died instead of waiting for a condition it will never meet."""
        for task in self.tasks:
            if task.done():
                task.result()
                raise AssertionError("a consumer loop returned before it was stopped")


@asynccontextmanager
async def running(*loops: ConsumerLoop) -> AsyncIterator[Running]:
    """Run `loops` for the block; on exit set stop and require each to return in time."""
    run = Running(loops)
    try:
        yield run
    except BaseException:
        for task in run.tasks:
            task.cancel()
        await asyncio.gather(*run.tasks, return_exceptions=True)
        raise
    run.stop.set()
    _, late = await asyncio.wait(run.tasks, timeout=STOP_TIMEOUT_S)
    for task in late:
        task.cancel()
    await asyncio.gather(*run.tasks, return_exceptions=True)
    assert not late, f"consumer loop did not stop within {STOP_TIMEOUT_S}s"
    for task in run.tasks:
        task.result()


def unhurried(settings: Settings) -> Settings:
    """The suite reclaims after 0.5 s idle, to test reclaiming quickly; a test that counts
    handler calls exactly, and does not need a reclaim, must not see a stalled batch (a busy
    CI machine) handed out a second time."""
    return msgspec.structs.replace(settings, claim_idle_ms=10_000)


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    what: str,
    *,
    within: float = 10.0,
    run: Running | None = None,
) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if run is not None:
            run.check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting until {what}")
        await asyncio.sleep(0.02)


async def dead_count(client: aioredis.Redis) -> int:
    return int(await client.xlen(DEAD))


# --- ack after the effect -------------------------------------------------------------------
async def test_batch_is_handled_then_acked(aredis: aioredis.Redis, settings: Settings) -> None:
    settings = unhurried(settings)
    sent = [post(f"p{i}") for i in range(10)]
    entry_ids = [await append(aredis, event) for event in sent]
    batches: list[list[Message[Any]]] = []
    pending_while_handling: list[int] = []

    async def handler(messages: Sequence[Message[Any]]) -> None:
        pending_while_handling.append(await pending(aredis))
        batches.append(list(messages))

    async with (
        async_client(settings) as client,
        running(make_loop(client, settings, handler)) as run,
    ):

        async def all_acked() -> bool:
            return len(batches) > 0 and await pending(aredis) == 0

        await wait_until(all_acked, "the batch is acked", run=run)

    assert len(batches) == 1  # one XREADGROUP, one handler call
    assert [m.entry_id for m in batches[0]] == entry_ids
    assert [m.event for m in batches[0]] == sent
    assert {(m.stream, m.attempt) for m in batches[0]} == {(STREAM, 1)}
    assert pending_while_handling == [10]  # acknowledged only after the handler returned
    assert await dead_count(aredis) == 0


# --- poison: retried alone, then dead-lettered ------------------------------------------------
async def test_failing_entry_is_retried_alone_then_dead_lettered(
    aredis: aioredis.Redis, sync_redis: redis.Redis, settings: Settings
) -> None:
    sent = [post(f"p{i}") for i in range(5)]
    entry_ids = [await append(aredis, event) for event in sent]
    bad_id = entry_ids[2]
    handler = Recorder("p2")

    async with (
        async_client(settings) as client,
        running(make_loop(client, settings, handler)) as run,
    ):

        async def dead_lettered() -> bool:
            return await dead_count(aredis) == 1

        await wait_until(dead_lettered, "p2 is dead-lettered", run=run)
        calls_at_death = len(handler.calls)
        # past another claim timeout and reclaim round: nobody tries it again
        await asyncio.sleep(settings.claim_idle_ms / 1000 * 2.5)
        assert len(handler.calls) == calls_at_death

    assert handler.texts() == ["p0", "p1", "p3", "p4"]  # each good entry once
    attempts_on_bad = [
        (len(call), call[0].attempt)
        for call in handler.calls
        if bad_id in {m.entry_id for m in call}
    ]
    # the batch fails, the entry is retried alone, then reclaimed until max_attempts (3)
    assert attempts_on_bad == [(5, 1), (1, 1), (1, 2), (1, 3)]
    assert await pending(aredis) == 0
    assert not await aredis.hexists(keys.failures(STREAM, GROUP), bad_id)

    (letter,) = dlq.list_dead_letters(sync_redis, 1)
    assert letter.partition == 0
    assert (letter.stream, letter.group, letter.entry) == (STREAM, GROUP, bad_id)
    assert letter.error == "ValueError: poison p2"
    assert letter.attempts == 3
    assert letter.payload == events.encode(sent[2])


async def test_outcomes_per_entry_settle_each_alone_and_never_rerun_the_batch(
    aredis: aioredis.Redis, sync_redis: redis.Redis, settings: Settings
) -> None:
    """A handler that says per entry what happened: p1 failed for good (dead-lettered at
    once, attempt 1), p3 is to be retried (left pending, handled again alone after the
    claim timeout, done the second time), the rest done. No neighbour is ever run again."""
    sent = [post(f"p{i}") for i in range(5)]
    entry_ids = [await append(aredis, event) for event in sent]
    calls: list[list[tuple[str, int]]] = []

    async def handler(messages: Sequence[Message[Any]]) -> Outcomes:
        calls.append([(text_of(m), m.attempt) for m in messages])
        outcomes: dict[str, Outcome] = {}
        for m in messages:
            if text_of(m) == "p1":
                outcomes[m.entry_id] = Failed("p1 can never work")
            elif text_of(m) == "p3" and m.attempt == 1:
                outcomes[m.entry_id] = RetryLater("p3 not yet")
        return outcomes

    async with (
        async_client(settings) as client,
        running(make_loop(client, settings, handler)) as run,
    ):

        async def settled() -> bool:
            return len(calls) >= 2 and await pending(aredis) == 0 and await dead_count(aredis) == 1

        await wait_until(settled, "every entry is acked or dead-lettered", run=run)

    assert calls[0] == [("p0", 1), ("p1", 1), ("p2", 1), ("p3", 1), ("p4", 1)]
    assert calls[1:] == [[("p3", 2)]]  # only the entry to be retried, reclaimed
    (letter,) = dlq.list_dead_letters(sync_redis, 1)
    assert (letter.entry, letter.error, letter.attempts) == (entry_ids[1], "p1 can never work", 1)
    assert not await aredis.exists(keys.failures(STREAM, GROUP))


async def test_undecodable_entries_are_dead_lettered_at_once(
    aredis: aioredis.Redis, sync_redis: redis.Redis, settings: Settings
) -> None:
    settings = unhurried(settings)
    unknown = b'{"type": "NoSuchEvent", "id": "1", "actor": "a", "at": "2024-05-01T12:00:00Z"}'
    await append(aredis, post("good-1"))
    garbage_id = await append_raw(aredis, {events.STREAM_FIELD: b"not json"})
    unknown_id = await append_raw(aredis, {events.STREAM_FIELD: unknown})
    fieldless_id = await append_raw(aredis, {b"x": b"1"})
    await append(aredis, post("good-2"))
    handler = Recorder()

    async with (
        async_client(settings) as client,
        running(make_loop(client, settings, handler)) as run,
    ):

        async def settled() -> bool:
            return await dead_count(aredis) == 3 and await pending(aredis) == 0

        await wait_until(settled, "three dead letters and nothing pending", run=run)

    # the poison did not hold up the rest of its batch, and was never retried
    assert [[text_of(m) for m in call] for call in handler.calls] == [["good-1", "good-2"]]
    letters = {letter.entry: letter for letter in dlq.list_dead_letters(sync_redis, 1)}
    assert set(letters) == {garbage_id, unknown_id, fieldless_id}
    assert {letter.attempts for letter in letters.values()} == {1}
    assert letters[garbage_id].error.startswith("undecodable: ")
    assert letters[garbage_id].payload == b"not json"
    assert letters[unknown_id].error.startswith("undecodable: ")
    assert letters[unknown_id].payload == unknown
    assert letters[fieldless_id].error == "entry has no event field"
    assert letters[fieldless_id].payload is None

    # re-driving by id moves only the named letter; one without a payload stays listed
    retry_stream = keys.retry(0, GROUP)
    assert dlq.redrive(sync_redis, 1, {letters[fieldless_id].ref}) == 0
    assert dlq.redrive(sync_redis, 1, {letters[garbage_id].ref}) == 1
    assert [fields for _, fields in sync_redis.xrange(retry_stream) or []] == [{b"e": b"not json"}]
    assert {letter.entry for letter in dlq.list_dead_letters(sync_redis, 1)} == {
        unknown_id,
        fieldless_id,
    }
    assert len(dlq.list_dead_letters(sync_redis, 1, limit=1)) == 1


async def test_entries_of_dead_consumers_are_reclaimed_or_given_up(
    aredis: aioredis.Redis, sync_redis: redis.Redis, settings: Settings
) -> None:
    """A consumer that died holding entries: they are reclaimed after the idle timeout; one
    that has already been delivered max_attempts times without an answer is dead-lettered."""
    await aredis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    orphan_id = await append(aredis, post("orphan"))
    cursed_id = await append(aredis, post("cursed"))
    await aredis.xreadgroup(GROUP, "dead-1", {STREAM: ">"}, count=2)
    for thief in ("dead-2", "dead-3"):  # cursed is delivered twice more, never answered
        await aredis.xclaim(STREAM, GROUP, thief, min_idle_time=0, message_ids=[cursed_id])
    handler = Recorder()

    async with (
        async_client(settings) as client,
        running(make_loop(client, settings, handler)) as run,
    ):

        async def settled() -> bool:
            return await pending(aredis) == 0 and await dead_count(aredis) == 1

        await wait_until(settled, "orphan handled and cursed dead-lettered", run=run)

    assert [(m.entry_id, m.attempt) for m in handler.handled] == [(orphan_id, 2)]
    (letter,) = dlq.list_dead_letters(sync_redis, 1)
    assert letter.entry == cursed_id
    assert letter.attempts == 4
    assert letter.error == "delivered 4 times without an answer (its worker kept dying)"


# --- re-drive -------------------------------------------------------------------------------
async def test_redrive_reaches_only_the_group_that_gave_up(
    aredis: aioredis.Redis, sync_redis: redis.Redis, settings: Settings
) -> None:
    settings = msgspec.structs.replace(settings, max_attempts=1)
    timeline, audit = Recorder("p1"), Recorder()
    sent = [post(f"p{i}") for i in range(3)]
    for event in sent:
        await append(aredis, event)

    async with async_client(settings) as client:
        loops = [
            make_loop(client, settings, timeline, group="g1", streams=event_log_streams("g1")(0)),
            make_loop(client, settings, audit, group="g2", streams=event_log_streams("g2")(0)),
        ]
        async with running(*loops) as run:

            async def given_up() -> bool:
                return await dead_count(aredis) == 1 and len(audit.handled) == 3

            await wait_until(given_up, "g1 gives up on p1 and g2 handles all", run=run)
            (letter,) = dlq.list_dead_letters(sync_redis, 1)
            assert (letter.group, letter.attempts) == ("g1", 1)

            timeline.failing.clear()  # the bug is fixed; send it back
            assert dlq.redrive(sync_redis, 1) == 1
            assert await dead_count(aredis) == 0

            async def redriven() -> bool:
                return "p1" in timeline.texts()

            await wait_until(redriven, "g1 handles the re-driven p1", run=run)
            await asyncio.sleep(settings.consumer_block_ms / 1000 * 3)  # g2 gets nothing more

    assert timeline.texts() == ["p0", "p1", "p2"]
    (again,) = [m for m in timeline.handled if text_of(m) == "p1"]
    assert again.stream == keys.retry(0, "g1")
    assert again.event == sent[1]
    assert again.attempt == 1
    assert audit.texts() == ["p0", "p1", "p2"]  # once each, none from g1's retry stream
    assert {m.stream for m in audit.handled} == {STREAM}
    assert await aredis.xlen(keys.retry(0, "g2")) == 0
    for group in ("g1", "g2"):
        assert await pending(aredis, STREAM, group) == 0
        assert await pending(aredis, keys.retry(0, group), group) == 0


# --- stopping -------------------------------------------------------------------------------
async def test_stop_finishes_and_acks_the_batch_in_hand(
    aredis: aioredis.Redis, settings: Settings
) -> None:
    settings = unhurried(settings)  # the handler takes as long as the suite's claim timeout
    for i in range(5):
        await append(aredis, post(f"p{i}"))
    started = asyncio.Event()
    handled: list[str] = []

    async def handler(messages: Sequence[Message[Any]]) -> None:
        started.set()
        await asyncio.sleep(0.5)
        handled.extend(text_of(m) for m in messages)

    async with async_client(settings) as client:
        stop = asyncio.Event()
        task = asyncio.create_task(make_loop(client, settings, handler).run(stop))
        await asyncio.wait_for(started.wait(), timeout=5)
        late = await append(aredis, post("late"))  # arrives while the batch is in hand
        stop.set()
        await asyncio.wait_for(task, timeout=STOP_TIMEOUT_S)

    assert handled == ["p0", "p1", "p2", "p3", "p4"]
    assert await pending(aredis) == 0  # acked before run() returned
    # the late entry was never read, so it waits, unowned, for the next start
    last_read = (await aredis.xinfo_groups(STREAM))[0]["last-delivered-id"].decode()
    assert stream_id(last_read) < stream_id(late)


async def test_stop_when_idle_returns_within_a_block(
    aredis: aioredis.Redis, settings: Settings
) -> None:
    async with async_client(settings) as client:
        stop = asyncio.Event()
        task = asyncio.create_task(make_loop(client, settings, Recorder()).run(stop))
        await asyncio.sleep(0.3)
        assert not task.done()
        began = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, timeout=STOP_TIMEOUT_S)
    assert time.monotonic() - began < settings.consumer_block_ms / 1000 + 2.0


# --- Redis restarts -------------------------------------------------------------------------
def no_retry_client(server: RedisServer, settings: Settings) -> aioredis.Redis:
    """Like connection.async_client but without redis-py's own retries, so that what paces
    reconnection attempts is the loop's backoff alone (the thing under test)."""
    return aioredis.Redis(
        host="127.0.0.1",
        port=server.port,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=2.0,
        retry=Retry(NoBackoff(), 0),
    )


class CommandLog:
    """Records (time, command name) of every command a client sends."""

    def __init__(self, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[tuple[float, str]] = []
        original: Callable[..., Awaitable[Any]] = client.execute_command

        async def execute_command(*args: Any, **options: Any) -> Any:
            self.sent.append((time.monotonic(), str(args[0])))
            return await original(*args, **options)

        monkeypatch.setattr(client, "execute_command", execute_command)

    def between(self, start: float, end: float) -> list[str]:
        return [name for at, name in self.sent if start <= at <= end]


@pytest.mark.slow
async def test_nogroup_after_a_restart_without_persistence(
    redis_factory: RedisFactory, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = redis_factory(appendonly=False)
    settings = make_settings(server)
    handler = Recorder()
    client = no_retry_client(server, settings)
    commands = CommandLog(client, monkeypatch)
    async with client, aioredis.Redis(host="127.0.0.1", port=server.port) as probe:
        for i in range(3):
            await append(probe, post(f"before-{i}"))
        async with running(make_loop(client, settings, handler)) as run:

            def handled(n: int) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    return len(handler.handled) >= n

                return check

            await wait_until(handled(3), "the first events are handled", run=run)

            server.stop()  # all data gone: appendonly no, no RDB
            down_at, cpu_at = time.monotonic(), time.process_time()
            await asyncio.sleep(3.0)
            down_for = time.monotonic() - down_at
            cpu = time.process_time() - cpu_at
            run.check()  # riding out the outage, not crashed

            # no hot loop: a few attempts a second at most, and the CPU mostly idle
            attempts = commands.between(down_at, down_at + down_for)
            assert 1 <= len(attempts) <= 40, attempts
            assert cpu < 0.7 * down_for, f"{cpu:.2f}s CPU in {down_for:.2f}s while Redis was down"

            server.start()  # same port and directory, empty
            up_at = time.monotonic()
            await probe.connection_pool.disconnect()
            for i in range(3):
                await append(probe, post(f"after-{i}"))
            # after NOGROUP the loop backs off (up to 5 s) before it recreates the group
            await wait_until(handled(6), "events after the restart are handled", within=25, run=run)

    assert handler.texts() == sorted(
        [f"before-{i}" for i in range(3)] + [f"after-{i}" for i in range(3)]
    )
    assert all(m.attempt == 1 for m in handler.handled)
    assert "XGROUP CREATE" in commands.between(up_at, time.monotonic())  # the loop recreated it


async def test_a_stream_gone_under_a_blocked_read_is_read_again(
    aredis: aioredis.Redis, settings: Settings
) -> None:
    """Redis ends a blocked XREADGROUP with UNBLOCKED when its stream goes away (deleted, or
    moved to another node with its slot by a reshard): the loop reads again, it does not die."""
    handler = Recorder()
    async with running(make_loop(aredis, unhurried(settings), handler)) as run:
        await append(aredis, post("before"))

        async def handled(n: int) -> bool:
            return len(handler.handled) >= n

        async def blocked() -> bool:
            info: Any = await aredis.info("clients")
            return int(info["blocked_clients"]) >= 1

        await wait_until(lambda: handled(1), "the first event is handled", run=run)
        await wait_until(blocked, "the loop blocks on its read", run=run)
        await aredis.delete(STREAM)  # the blocked read is answered -UNBLOCKED

        async def recreated() -> bool:
            return bool(await aredis.exists(STREAM))

        await wait_until(recreated, "the loop recreated its group", within=15, run=run)
        await append(aredis, post("after"))
        await wait_until(lambda: handled(2), "the event after is handled", within=15, run=run)
        run.check()
    assert handler.texts() == ["after", "before"]


@pytest.mark.slow
async def test_aof_restart_keeps_entries_group_and_pending(
    redis_factory: RedisFactory, make_settings: SettingsFactory
) -> None:
    server = redis_factory(appendonly=True, appendfsync="always")
    settings = make_settings(server)
    with server.client() as sync:
        sync.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        entry_ids = [
            sync.xadd(STREAM, {events.STREAM_FIELD: events.encode(post(f"p{i}"))}).decode()
            for i in range(3)
        ]
        sync.xreadgroup(GROUP, "died-with-it", {STREAM: ">"}, count=1)

    server.kill()  # a crash, not a clean shutdown: only what was fsynced survives
    server.start()

    with server.client() as sync:
        assert sync.xlen(STREAM) == 3
        assert [g["name"] for g in sync.xinfo_groups(STREAM)] == [GROUP.encode()]
        assert sync.xpending(STREAM, GROUP)["pending"] == 1

    handler = Recorder()
    async with (
        async_client(settings) as client,
        running(make_loop(client, settings, handler)) as run,
    ):

        async def all_handled() -> bool:
            return len(handler.handled) == 3

        await wait_until(all_handled, "the kept entries are handled", run=run)

    assert sorted((m.entry_id, m.attempt) for m in handler.handled) == [
        (entry_ids[0], 2),  # reclaimed from the consumer that held it before the crash
        (entry_ids[1], 1),
        (entry_ids[2], 1),
    ]
    with server.client() as sync:
        assert sync.xpending(STREAM, GROUP)["pending"] == 0


@pytest.mark.slow
async def test_redis_lost_between_handling_and_ack(
    redis_factory: RedisFactory, make_settings: SettingsFactory
) -> None:
    """The batch's effect happened but its XACK cannot reach Redis: the loop survives, and the
    entries, still pending after the restart (AOF), are handled again (at-least-once) and acked."""
    server = redis_factory(appendonly=True, appendfsync="always")
    settings = make_settings(server)
    calls: list[list[str]] = []

    async def handler(messages: Sequence[Message[Any]]) -> None:
        calls.append([text_of(m) for m in messages])
        if len(calls) == 1:
            server.stop()

    async with aioredis.Redis(host="127.0.0.1", port=server.port) as probe:
        for i in range(2):
            await append(probe, post(f"p{i}"))
        async with (
            async_client(settings) as client,
            running(make_loop(client, settings, handler)) as run,
        ):

            async def first_call() -> bool:
                return len(calls) == 1

            await wait_until(first_call, "the handler ran once", run=run)
            await asyncio.sleep(1.0)
            run.check()
            server.start()
            await probe.connection_pool.disconnect()

            async def acked() -> bool:
                return len(calls) >= 2 and await pending(probe) == 0

            await wait_until(acked, "the entries are handled again and acked", within=20, run=run)

    assert calls[0] == ["p0", "p1"]
    assert sorted(t for call in calls[1:] for t in call) == ["p0", "p1"]


@pytest.mark.slow
async def test_stop_during_an_outage_returns(
    redis_factory: RedisFactory, make_settings: SettingsFactory
) -> None:
    """SIGTERM while Redis is down ends the worker instead of waiting for Redis to return."""
    server = redis_factory(appendonly=False)
    settings = make_settings(server)
    async with no_retry_client(server, settings) as client:
        stop = asyncio.Event()
        task = asyncio.create_task(make_loop(client, settings, Recorder()).run(stop))
        await asyncio.sleep(0.5)
        server.stop()
        await asyncio.sleep(2.0)  # the loop's backoff has grown past a second by now
        assert not task.done()
        began = time.monotonic()
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=3.0)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert time.monotonic() - began < 6.0


# --- a slow batch keeps its lease ---------------------------------------------------------------
async def test_a_slow_batch_is_neither_handed_out_again_nor_counted_as_an_attempt(
    aredis: aioredis.Redis, settings: Settings
) -> None:
    """Two consumers; the first batch takes four claim timeouts to handle (a burst of posts to
    big followings). Its lease is renewed while in hand: nobody reclaims it, it is handled
    once, on its first attempt, and nothing is dead-lettered."""
    sent = [post(f"p{i}") for i in range(5)]
    for event in sent:
        await append(aredis, event)
    slow = settings.claim_idle_ms / 1000 * 4
    calls: list[list[Message[Any]]] = []

    async def handler(messages: Sequence[Message[Any]]) -> None:
        calls.append(list(messages))
        if len(calls) == 1:
            await asyncio.sleep(slow)

    async with (
        async_client(settings) as first,
        async_client(settings) as second,
        running(make_loop(first, settings, handler), make_loop(second, settings, handler)) as run,
    ):

        async def all_acked() -> bool:
            return len(calls) > 0 and await pending(aredis) == 0

        await wait_until(all_acked, "the slow batch is acked", within=slow + 10, run=run)
        await asyncio.sleep(settings.claim_idle_ms / 1000 * 2)  # a reclaim round would show

    handled = [text_of(m) for call in calls for m in call]
    assert sorted(handled) == sorted(f"p{i}" for i in range(5))  # each once
    assert {m.attempt for call in calls for m in call} == {1}
    assert await dead_count(aredis) == 0
