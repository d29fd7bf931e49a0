"""The one consumer loop every worker runs: read a batch, handle, ack in bulk, reclaim, dead-letter.

A worker is a handler — `async def handle(messages: Sequence[Message[Any]]) -> Outcomes | None`
whose effects are safe to repeat — run over `ConsumerLoop`. The loop gives at-least-once
processing:

- XREADGROUP a batch per stream and hand it to the handler; XACK an entry only after the
  handler returned (acknowledge after the effect).
- The handler says per entry what happened (`Outcomes`: entry id → `Retry` or `Failed`;
  an entry it does not name is done). Done entries are acked; a `Retry` counts a failure
  against its entry (a hash beside the stream) and leaves it pending, to be reclaimed and
  handled again; a `Failed` is dead-lettered at once. So one bad message never makes its
  neighbours run again — a neighbour already deferred or sent stays exactly that.
- Only if the handler raises (a bug, or Redis failing under it) is each message of the
  batch run again alone, so one poison entry cannot hold up the others.
- A reclaimer XAUTOCLAIMs entries idle longer than MUSTER_CLAIM_IDLE_MS from consumers that
  died or stalled, and handles them here. While a batch is in hand its lease is renewed
  (XCLAIM JUSTID to itself every third of that time), so a batch that is slow but alive — a
  burst of posts to big followings — is neither handed out a second time nor counted as an
  attempt; one held past HELD_WARN_CLAIMS claim timeouts is logged, once.
- An entry that failed MUSTER_MAX_ATTEMPTS times, or raised errors.PermanentError once, or
  was delivered that many times without an answer (its worker kept dying), or cannot be
  decoded goes to the partition's dead-letter stream with its error and is acknowledged;
  `muster dlq redrive` puts it back, to that group only.
- NOGROUP (Redis restarted without its data) recreates the group from the stream's start,
  and lost connections are retried, both with capped exponential backoff, never a hot loop.
  A handler that raises because Redis cannot answer for a moment (connection.UNAVAILABLE:
  down, a cluster failing over or migrating a slot) has its batch left pending as it is,
  counted as no attempt: the loop backs off and the entries are handed out again (reclaimed)
  once Redis answers, so an outage never turns into failures and dead letters.
- `stop` (set on SIGTERM) lets the batch in hand finish and be acked, then returns.

The loop never interprets events; it does not know what a timeline or a delivery is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from muster import events, keys, scripts
from muster.connection import UNAVAILABLE, text
from muster.errors import EventDecodeError, PermanentError
from muster.tasks import cancel_and_wait

log = structlog.get_logger("muster.consumer")

_TRANSIENT: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    OSError,
    *UNAVAILABLE,
)
_CONSUMER_IDLE_FORGET_MS = 24 * 3600 * 1000
STREAM_MOVED = "UNBLOCKED"
"""How Redis ends a blocked XREADGROUP whose stream went away under it: deleted, or moved to
another node with its slot (`redis-cli --cluster reshard`): nothing wrong with the message."""


E = TypeVar("E")
Decode = Callable[[bytes], Any]
"""A stream entry's payload → what handlers get (events.decode on the event log); raises
EventDecodeError for what it cannot decode, which is dead-lettered."""


@dataclass(frozen=True, slots=True)
class Message(Generic[E]):
    stream: str
    entry_id: str
    event: E
    attempt: int  # 1 on first delivery; grows with each reclaim
    payload: bytes = b""  # the entry's event field exactly as stored (the audit archive keeps it)


@dataclass(frozen=True, slots=True)
class Retry:
    """Not done, may succeed later: count a failure, leave the entry pending (reclaimed after
    MUSTER_CLAIM_IDLE_MS); dead-lettered once it has failed MUSTER_MAX_ATTEMPTS times."""

    error: str


@dataclass(frozen=True, slots=True)
class Failed:
    """Retrying cannot help: dead-letter the entry now, with `error`."""

    error: str


Outcome = Retry | Failed
Outcomes = Mapping[str, Outcome]
"""A handler's answer: entry id → what went wrong with it; entries not named are done."""
Handler = Callable[[Sequence[Message[Any]]], Awaitable[Outcomes | None]]


@dataclass(frozen=True, slots=True)
class LoopConfig:
    batch: int = 256
    block_ms: int = 2_000
    claim_idle_ms: int = 30_000
    max_attempts: int = 5
    backoff_max_s: float = 5.0


HELD_WARN_CLAIMS = 10
"""A batch in hand this many claim timeouts is logged as slow (a handler that never returns
keeps its lease: the warning, and the pending count, are how an operator sees it)."""


def consumer_name() -> str:
    """Unique per process start, so a restarted worker never inherits a dead one's identity."""
    return f"{socket.gethostname()}-{os.getpid()}-{random.getrandbits(24):06x}"


class _Backoff:
    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.delay = 0.0

    async def wait(self, stop: asyncio.Event) -> None:
        """Sleep the next delay, or less if `stop` is set meanwhile."""
        self.delay = min(self.cap, max(0.05, self.delay * 2))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.delay * random.uniform(0.5, 1.0))

    def reset(self) -> None:
        self.delay = 0.0


class ConsumerLoop:
    """Consume `streams` (one partition's event log and retry stream) as `group`."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        streams: Sequence[str],
        group: str,
        handler: Handler,
        dead_letters: str,
        config: LoopConfig,
        consumer: str | None = None,
        decode: Decode = events.decode,
    ) -> None:
        self.redis = redis
        self.streams = list(streams)
        self.group = group
        self.handler = handler
        self.decode = decode
        self.dead_letters = dead_letters
        self.config = config
        self.consumer = consumer or consumer_name()
        self.log = log.bind(group=group, consumer=self.consumer)

    # --- lifecycle --------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Read and reclaim every stream until `stop` is set; finish the batch in hand first."""
        tasks = [asyncio.create_task(self._read_forever(s, stop)) for s in self.streams]
        tasks += [asyncio.create_task(self._reclaim_forever(s, stop)) for s in self.streams]
        try:
            await asyncio.gather(*tasks)
        finally:
            await asyncio.gather(*(cancel_and_wait(t) for t in tasks), return_exceptions=True)

    async def ensure_group(self, stream: str) -> None:
        """Create the group at the stream's start (so nothing appended earlier is missed)."""
        try:
            await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            self.log.info("group created", stream=stream)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read_forever(self, stream: str, stop: asyncio.Event) -> None:
        backoff = _Backoff(self.config.backoff_max_s)
        await self._call_with_recovery(stream, backoff, stop, lambda: self.ensure_group(stream))
        while not stop.is_set():
            reply = await self._call_with_recovery(
                stream,
                backoff,
                stop,
                lambda: self.redis.xreadgroup(
                    self.group,
                    self.consumer,
                    {stream: ">"},
                    count=self.config.batch,
                    block=self.config.block_ms,
                ),
            )
            if not reply:
                continue
            backoff.reset()
            for _, entries in reply:
                try:
                    await self._process(stream, entries, attempts=None)
                except _TRANSIENT as exc:
                    # Redis went away before the batch was acked: its entries stay pending
                    # and are reclaimed (handled again) once it is back. Keep the loop alive.
                    self.log.warning(
                        "redis lost before the batch was acked", stream=stream, error=str(exc)
                    )
                    await backoff.wait(stop)

    async def _reclaim_forever(self, stream: str, stop: asyncio.Event) -> None:
        backoff = _Backoff(self.config.backoff_max_s)
        interval = max(0.05, self.config.claim_idle_ms / 2000)
        rounds = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except TimeoutError:
                pass
            await self._call_with_recovery(stream, backoff, stop, lambda: self.reclaim(stream))
            rounds += 1
            if rounds % 100 == 0:
                await self._call_with_recovery(
                    stream, backoff, stop, lambda: self._forget_idle(stream)
                )

    async def _call_with_recovery(
        self,
        stream: str,
        backoff: _Backoff,
        stop: asyncio.Event,
        call: Callable[[], Awaitable[Any]],
    ) -> Any:
        """Run `call`, riding out lost connections and NOGROUP with capped backoff.

        Returns None without a result once `stop` is set during an outage, so SIGTERM ends
        a worker whose Redis is down instead of waiting for Redis to come back.
        """
        while True:
            try:
                return await call()
            except UNAVAILABLE as exc:  # before ResponseError: CLUSTERDOWN and TRYAGAIN are ones
                self.log.warning("redis unavailable, retrying", stream=stream, error=str(exc))
                await backoff.wait(stop)
            except ResponseError as exc:
                if str(exc).startswith(STREAM_MOVED):
                    # the blocked read's stream left this node (its slot migrated, or the key
                    # was deleted): read again, which the cluster client sends where it is now
                    self.log.warning("stream moved, reading again", stream=stream)
                    await backoff.wait(stop)
                    if stop.is_set():
                        return None
                    continue
                if "NOGROUP" not in str(exc):
                    raise
                self.log.warning("group missing, recreating", stream=stream)
                await backoff.wait(stop)
                with contextlib.suppress(*_TRANSIENT):
                    await self.ensure_group(stream)
            except _TRANSIENT as exc:
                self.log.warning("redis unavailable, retrying", stream=stream, error=str(exc))
                await backoff.wait(stop)
            if stop.is_set():
                return None

    # --- reclaiming -------------------------------------------------------------------------
    async def reclaim(self, stream: str) -> int:
        """XAUTOCLAIM entries idle past claim_idle_ms and handle them; returns how many."""
        cursor = "0-0"
        total = 0
        while True:
            reply = await self.redis.xautoclaim(
                stream,
                self.group,
                self.consumer,
                min_idle_time=self.config.claim_idle_ms,
                start_id=cursor,
                count=self.config.batch,
            )
            cursor, entries = text(reply[0]), reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if deleted:  # trimmed or deleted while pending: nothing left to handle
                await self.redis.xack(stream, self.group, *deleted)
            if entries:
                total += len(entries)
                attempts = await self._times_delivered(stream, entries)
                self.log.info("reclaimed", stream=stream, count=len(entries))
                await self._process(stream, entries, attempts=attempts)
            if cursor == "0-0":
                return total

    async def _times_delivered(self, stream: str, entries: list[Any]) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(stream, self.group, min=entry_id, max=entry_id, count=1)
            replies = await pipe.execute()
        counts: dict[str, int] = {}
        for reply in replies:
            for row in reply:
                counts[text(row["message_id"])] = int(row["times_delivered"])
        return counts

    async def _forget_idle(self, stream: str) -> None:
        """Drop consumers with nothing pending that have been silent for a day (old restarts)."""
        for info in await self.redis.xinfo_consumers(stream, self.group):
            name = text(info["name"])
            if (
                name != self.consumer
                and info["pending"] == 0
                and info["idle"] > _CONSUMER_IDLE_FORGET_MS
            ):
                await self.redis.xgroup_delconsumer(stream, self.group, name)

    # --- handling ---------------------------------------------------------------------------
    async def _process(
        self, stream: str, entries: list[Any], *, attempts: dict[str, int] | None
    ) -> None:
        messages: list[Message[Any]] = []
        for raw_id, fields in entries:
            entry_id = text(raw_id)
            attempt = attempts.get(entry_id, 1) if attempts is not None else 1
            payload = (fields or {}).get(events.STREAM_FIELD)
            if payload is None:
                await self._dead_letter(
                    stream, entry_id, payload, "entry has no event field", attempt
                )
                continue
            if attempt > self.config.max_attempts:
                error = f"delivered {attempt} times without an answer (its worker kept dying)"
                await self._dead_letter(stream, entry_id, payload, error, attempt)
                continue
            try:
                event = self.decode(payload)
            except EventDecodeError as exc:
                await self._dead_letter(stream, entry_id, payload, f"undecodable: {exc}", attempt)
                continue
            messages.append(Message(stream, entry_id, event, attempt, payload))
        if not messages:
            return
        lease = asyncio.create_task(self._renew(stream, [m.entry_id for m in messages]))
        try:
            await self._handle(stream, messages)
        finally:
            await cancel_and_wait(lease)

    async def _renew(self, stream: str, entry_ids: list[str]) -> None:
        """Keep the batch's entries from looking idle while it is in hand: XCLAIM to this
        consumer with JUSTID resets their idle time without counting a delivery (entries
        acked meanwhile are no longer pending, and XCLAIM skips them)."""
        interval = self.config.claim_idle_ms / 3000
        ids: list[Any] = list(entry_ids)  # redis-py's annotation wants a list of Any
        held = 0.0
        warned = False
        while True:
            await asyncio.sleep(interval)
            held += interval
            try:
                await self.redis.xclaim(stream, self.group, self.consumer, 0, ids, justid=True)
            except Exception as exc:  # Redis away or restarted: the batch's own calls will say
                self.log.warning("lease renewal failed", stream=stream, error=str(exc))
            if not warned and held * 1000 >= HELD_WARN_CLAIMS * self.config.claim_idle_ms:
                warned = True
                self.log.warning(
                    "batch in hand for long; its handler may be stuck",
                    stream=stream,
                    size=len(entry_ids),
                    seconds=round(held),
                )

    async def _handle(self, stream: str, messages: list[Message[Any]]) -> None:
        try:
            try:
                outcomes = await self.handler(messages)
            except NoScriptError:
                # A node lost its scripts (restarted, or a replica was promoted): they load
                # again where they next run (scripts.py); the handler's effects repeat safely.
                scripts.forget_everywhere()
                outcomes = await self.handler(messages)
        except UNAVAILABLE:
            raise  # not the entries' fault: left pending, the loop backs off (see above)
        except Exception as exc:
            if len(messages) == 1:
                await self._settle(stream, messages, {messages[0].entry_id: _outcome_of(exc)})
                return
            # Unexpected: the handler could not say which entry failed. Run each alone, so a
            # poison entry is found and its neighbours still get done.
            self.log.warning(
                "batch raised, running its entries one by one",
                stream=stream,
                size=len(messages),
                error=f"{type(exc).__name__}: {exc}",
            )
            for message in messages:
                try:
                    alone = await self.handler([message])
                except UNAVAILABLE:
                    raise
                except Exception as exc:
                    alone = {message.entry_id: _outcome_of(exc)}
                await self._settle(stream, [message], alone)
            return
        await self._settle(stream, messages, outcomes)

    async def _settle(
        self, stream: str, messages: Sequence[Message[Any]], outcomes: Outcomes | None
    ) -> None:
        """Ack what is done, count what is to be retried, dead-letter what failed."""
        outcomes = outcomes or {}
        done = [m for m in messages if m.entry_id not in outcomes]
        if done:
            await self._ack(stream, done)
        for message in messages:
            outcome = outcomes.get(message.entry_id)
            if outcome is not None:
                await self._failed(message, outcome)

    async def _ack(self, stream: str, messages: Sequence[Message[Any]]) -> None:
        ids = [m.entry_id for m in messages]
        retried = [m.entry_id for m in messages if m.attempt > 1]
        if retried:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(stream, self.group, *ids)
                pipe.hdel(keys.failures(stream, self.group), *retried)
                await pipe.execute()
        else:
            await self.redis.xack(stream, self.group, *ids)

    async def _failed(self, message: Message[Any], outcome: Outcome) -> None:
        failures_key = keys.failures(message.stream, self.group)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(failures_key, message.entry_id, 1)
            pipe.expire(failures_key, keys.FAILURES_TTL_S)
            count, _ = await pipe.execute()
        if isinstance(outcome, Failed) or count >= self.config.max_attempts:
            await self._dead_letter(
                message.stream, message.entry_id, message.payload, outcome.error, count
            )
        else:
            self.log.warning(
                "handler failed; will retry after the claim timeout",
                stream=message.stream,
                entry=message.entry_id,
                event_id=message.event.id,
                attempt=count,
                error=outcome.error,
            )

    async def _dead_letter(
        self, stream: str, entry_id: str, payload: bytes | None, error: str, attempts: int
    ) -> None:
        """Move one entry to the dead-letter stream and ack it, in one transaction."""
        fields: dict[str, str | bytes] = {
            "stream": stream,
            "group": self.group,
            "entry": entry_id,
            "error": error[:2000],
            "attempts": str(attempts),
        }
        if payload is not None:
            fields["e"] = payload
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letters, fields)  # type: ignore[arg-type]
            pipe.xack(stream, self.group, entry_id)
            pipe.hdel(keys.failures(stream, self.group), entry_id)
            await pipe.execute()
        self.log.error(
            "dead-lettered", stream=stream, entry=entry_id, attempts=attempts, error=error
        )


def _outcome_of(exc: Exception) -> Outcome:
    """What an exception a handler raised means for its entry."""
    error = f"{type(exc).__name__}: {exc}"
    return Failed(error) if isinstance(exc, PermanentError) else Retry(error)
