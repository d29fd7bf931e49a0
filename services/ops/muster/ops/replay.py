"""Replay: rebuild projections from the event log or the archive; restore after a total loss.

`replay()` drops the chosen projection families (muster.projections.families), reads the history in order
(history.py) and applies it in batches with the very code the workers run: the timeline
worker's `Timeline.apply_batch` (with delivery routing off unless `redeliver`, and no live
announcements), the audit projection (never the archive: it is the source, not a copy), and
for the write side muster.writeside, the function the api applies with each append. Given `since` (an event id), nothing is
dropped and the events from there on are applied on top (every write is idempotent).

Restore: from the archive, into a Redis whose event log is empty (a total loss), replay also
puts every archived event back into its event-log stream under its original entry id, then
points the workers' consumer groups at the end, so they carry on with what comes next instead
of handling history again. While it runs, the groups point past any id, so a worker started
early reads nothing. Then every account (old tokens work), follow, post, DM and timeline is
back, the audit index is rebuilt, and the archive continues its chains.

Email, SMS and webhooks are never sent again unless `redeliver` (routing then runs as on the
live path, and only for what has no delivery status yet).

Parallel: the partitions are shared among worker processes (`workers_for`: one per partition
up to the CPUs, or `--workers`; processes.py starts them), worker w applying partitions w, w+N,
w+2N... Each process reads the whole history in order (log or archive, merged by entry id:
history.py) and keeps the events that belong to it — by their own partition
(eventlog.partition_for, under MUSTER_PARTITIONS, so a changed partition count is fine) for the
restored log, the audit index and the write side, and by their ordering partition
(timeline.ordering_partition: a follow change goes with the account followed, whose posts read
its followers) for the timeline — so each partition's projections see its events in log order,
as one process would. Inside a process, one applier per partition, each with its own projection
objects and pipelines, runs side by side. Across partitions, the projections converge whatever
the order, as they do under the live workers (see each projection's docstring). One worker that
fails fails the replay (`ReplayWorkerFailed`, naming its partitions). `--redeliver` with the
write side stays in one process and one applier: routing reads the recipients' write side,
which must be as of each post.

It is run as an rq job (jobs.py) or inline; `progress` is told how far it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from muster import archive, eventlog, history, keys, scripts, streamids
from muster.connection import async_client, text
from muster.events import AnyEvent
from muster.history import Item
from muster.logs import configure_logging
from muster.ops import processes
from muster.projections import families
from muster.projections.audit import AuditIndex
from muster.projections.timeline import Timeline, ordering_partition
from muster.settings import Settings
from muster.streamids import StreamId
from muster.writeside import WriteSide

log = structlog.get_logger("muster.ops.replay")

DEFAULT_BATCH = 2000
READ_AHEAD = 2
"""Batches of history read ahead of the one being applied."""
_BLOCKED = "18446744073709551615-0"
_encode = msgspec.msgpack.Encoder().encode  # a group here reads nothing until moved back
Progress = Callable[[str, int, int, float], None]
"""progress(phase, done, total, events per second)."""


class ReplayError(Exception):
    """The replay cannot run as asked; the message says why and what to do."""


class ReplayWorkerFailed(ReplayError):
    """A worker process failed: the replay stopped, its projections are partly rebuilt."""


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True):
    projections: tuple[str, ...] | None = None  # None: families.DEFAULT_REPLAY
    from_archive: bool = False
    since: str | None = None  # an event id; None: everything, after dropping
    redeliver: bool = False
    batch: int = DEFAULT_BATCH
    workers: int | None = None  # processes; None: min(partitions, CPUs) (`workers_for`)


class ReplayResult(msgspec.Struct, kw_only=True):
    projections: list[str]
    source: Literal["log", "archive"]
    restored: bool
    events: int
    dropped_keys: int
    seconds: float
    events_per_second: float
    workers: int = 1
    worker_cpu_seconds: list[float] = []
    """CPU each worker process spent (a spawned one: in all, its start-up included)."""


async def log_is_empty(redis: aioredis.Redis, partitions: int) -> bool:
    async with redis.pipeline(transaction=False) as pipe:
        for p in range(partitions):
            pipe.xlen(keys.events(p))
        lengths = await pipe.execute()
    return not any(lengths)


def _choose(request: ReplayRequest, restore: bool) -> tuple[str, ...]:
    try:
        chosen = families.parse_families(request.projections)
    except ValueError as exc:
        raise ReplayError(str(exc)) from None
    if restore:
        chosen = tuple(f for f in families.ALL if f != "deliveries" or request.redeliver)
    if "deliveries" in chosen and not request.redeliver:
        raise ReplayError(
            "delivery status is not in the log: rebuilding it means routing every delivery "
            "again; add --redeliver to do that (email, SMS and webhooks are sent again)"
        )
    return chosen


async def _block_groups(redis: aioredis.Redis, partitions: int) -> None:
    for p in range(partitions):
        for group in keys.EVENT_LOG_GROUPS:
            try:
                await redis.xgroup_create(keys.events(p), group, id=_BLOCKED, mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
                await redis.xgroup_setid(keys.events(p), group, id=_BLOCKED)


async def _release_groups(redis: aioredis.Redis, partitions: int) -> None:
    for p in range(partitions):
        info: Any = await redis.xinfo_stream(keys.events(p))
        last = text(info["last-generated-id"])
        for group in keys.EVENT_LOG_GROUPS:
            await redis.xgroup_setid(keys.events(p), group, id=last)


class _Restorer:
    """Puts archived events back into their streams, in order, under their entry ids."""

    def __init__(self, redis: aioredis.Redis, partitions: int) -> None:
        self.partitions = partitions
        self.last: dict[int, StreamId] = {}
        self._script = scripts.register(redis, "restore")

    async def queue(self, pipe: Any, items: Iterable[Item]) -> None:
        per_partition: dict[int, list[str]] = {}
        for item in items:
            p = eventlog.partition_for(item.event, self.partitions)
            entry = item.entry
            previous = self.last.get(p)
            if previous is not None and entry <= previous:
                entry = streamids.after(previous)  # a re-driven copy, or partitions changed
            self.last[p] = entry
            per_partition.setdefault(p, []).extend(
                (streamids.format_id(entry), item.payload.decode(), item.event.id)
            )
        for p, args in per_partition.items():
            await self._script(
                keys=[keys.events(p), keys.archived(p)], args=[_encode(args)], client=pipe
            )


async def _record_archive(
    redis: aioredis.Redis, settings: Settings, last: dict[int, StreamId]
) -> None:
    """Tell Redis how far each partition's archive goes (archiver.py reads it), and up to
    which entry of the restored log (`last`, from every worker's restorer)."""
    for p in archive.partitions_in(settings.archive_dir):
        tail = archive.PartitionArchive(
            settings.archive_dir, p, segment_bytes=settings.archive_segment_bytes
        ).tail()
        mapping: dict[Any, Any] = {"n": tail.n, "hash": tail.hash}
        if p in last:
            mapping["entry"] = streamids.format_id(last[p])
        await redis.hset(keys.archive_head(p), mapping=mapping)


async def _source(
    redis: aioredis.Redis, settings: Settings, request: ReplayRequest, since: int | None
) -> AsyncIterator[list[Item]]:
    if request.from_archive:
        source: Iterator[list[Item]] = history.from_archive(
            settings.archive_dir, since=since, batch=request.batch
        )
        for batch in source:
            yield batch
            await asyncio.sleep(0)  # let the writes of the previous batch go on meanwhile
    else:
        async for batch in history.from_log(
            redis, settings.partitions, since=since, batch=request.batch
        ):
            yield batch


async def _batches(
    redis: aioredis.Redis, settings: Settings, request: ReplayRequest, since: int | None
) -> AsyncIterator[list[Item]]:
    """The history, read and decoded ahead (READ_AHEAD batches) while Redis applies the
    batch before: the reading costs this process, the applying costs Redis."""
    queue: asyncio.Queue[list[Item] | None] = asyncio.Queue(maxsize=READ_AHEAD)

    async def read() -> None:
        async for batch in _source(redis, settings, request, since):
            await queue.put(batch)
        await queue.put(None)

    reader = asyncio.create_task(read())
    try:
        while (batch := await queue.get()) is not None:
            yield batch
        await reader  # its error, if any
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


@dataclass(slots=True)
class _Share:
    """One worker's next batch: the items of its partition (log, audit index, write side)
    and the events its timeline applies (timeline.ordering_partition), each in log order."""

    items: list[Item] = field(default_factory=list)
    events: list[AnyEvent] = field(default_factory=list)

    def full(self, batch: int) -> bool:
        return len(self.items) >= batch or len(self.events) >= batch


class _Applier:
    """Applies one partition's history (or, in order, all of it) with the projections chosen:
    its own Timeline, audit index and write side, so its batches go out on their own
    pipelines while the other partitions' appliers run."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: Settings,
        chosen: tuple[str, ...],
        request: ReplayRequest,
        restorer: _Restorer | None,
        in_order: bool,
    ) -> None:
        self.redis = redis
        self.restorer = restorer
        self.in_order = in_order
        self.timeline = None
        if set(chosen) & {*families.TIMELINE_FAMILIES, "deliveries"}:
            self.timeline = Timeline(
                redis,
                settings,
                route=request.redeliver,
                announce=False,
                late_follows=False,
                expand=False,
            )
        partitions = settings.partitions
        self.index = AuditIndex(redis, partitions=partitions) if "audit" in chosen else None
        self.writeside = WriteSide(redis, partitions=partitions) if "accounts" in chosen else None

    async def apply(self, share: _Share) -> None:
        # Restored log, audit index and write side, and the timeline families, write disjoint
        # keys: on two connections, one is built while the other runs — unless routing
        # (--redeliver) must read this batch's write side first.
        if self.in_order:
            await self._log_and_index(share.items)
            work = []
        else:
            work = [self._log_and_index(share.items)]
        if self.timeline is not None and share.events:
            work.append(self.timeline.apply_batch(share.events))
        for outcome in await asyncio.gather(*work, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome

    async def _log_and_index(self, batch: list[Item]) -> None:
        if self.restorer is None and self.index is None and self.writeside is None:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            if self.restorer is not None:
                await self.restorer.queue(pipe, batch)
            if self.index is not None:
                await self.index.queue(pipe, ((item.event, item.payload) for item in batch))
            if self.writeside is not None:
                await self.writeside.apply_batch(pipe, [item.event for item in batch])
            await pipe.execute()


async def _total(redis: aioredis.Redis, settings: Settings, request: ReplayRequest) -> int:
    if request.from_archive:
        return archive.count_records(settings.archive_dir)
    async with redis.pipeline(transaction=False) as pipe:
        for p in range(settings.partitions):
            pipe.xlen(keys.events(p))
        return sum(await pipe.execute())


def _since(raw: str | None) -> int | None:
    if raw is None:
        return None
    if not raw.isdigit():
        raise ReplayError(f"since must be an event id (digits), got {raw!r}")
    return int(raw)


def workers_for(request: ReplayRequest, settings: Settings) -> int:
    """The processes a replay runs in: as asked (at most one per partition), else one per
    partition up to the CPUs this process may use (processes.available_cpus)."""
    if request.workers is not None and request.workers < 1:
        raise ReplayError(f"workers must be at least 1, got {request.workers}")
    wanted = request.workers or min(settings.partitions, processes.available_cpus())
    return min(wanted, settings.partitions)


class _Task(msgspec.Struct, frozen=True, kw_only=True):
    """One process's share of a replay (what `_work` needs, sent to a spawned process)."""

    settings: Settings
    request: ReplayRequest
    chosen: tuple[str, ...]
    since: int | None
    restore: bool
    owned: tuple[int, ...]  # the partitions whose events this process applies


def owned_by(worker: int, workers: int, partitions: int) -> tuple[int, ...]:
    """The partitions worker `worker` of `workers` applies: every `workers`-th (on a cluster,
    each partition's slot is wherever its hash tag falls, so a share spans the masters)."""
    return tuple(range(worker, partitions, workers))


async def _apply_owned(
    redis: aioredis.Redis, task: _Task, applied: Callable[[int], None]
) -> dict[int, str]:
    """Apply the owned partitions' share of the history; how far each restored log goes.

    The whole history is read in order (every process reads all of it: that is what keeps
    the cross-partition order right) and each event kept where it belongs: the log, audit
    index and write side of its own partition (eventlog.partition_for), and the timeline of
    its ordering partition (timeline.ordering_partition: a follow with the account followed,
    which may live in another process's share of the streams). Within this process, one
    applier per owned partition, each on its own pipelines, runs side by side."""
    settings, request = task.settings, task.request
    # Routing (--redeliver) reads the write side (follow records, reach) of the recipients'
    # partitions, which must be as of each post: then one applier applies everything in order.
    in_order = request.redeliver and "accounts" in task.chosen
    if in_order:
        lanes = dict.fromkeys(range(settings.partitions), 0)
    else:
        lanes = {p: lane for lane, p in enumerate(task.owned)}
    width = len(set(lanes.values()))
    restorer = _Restorer(redis, settings.partitions) if task.restore else None
    appliers = [
        _Applier(redis, settings, task.chosen, request, restorer, in_order) for _ in range(width)
    ]
    queues: list[asyncio.Queue[_Share | None]] = [
        asyncio.Queue(maxsize=READ_AHEAD) for _ in range(width)
    ]
    partitions = settings.partitions

    async def read() -> None:
        """The history in order, split by lane, up to `request.batch` events a share."""
        pending = [_Share() for _ in range(width)]
        async for batch in _batches(redis, settings, request, task.since):
            for item in batch:
                home = eventlog.partition_for(item.event, partitions)
                own = lanes.get(home)
                if own is not None:
                    pending[own].items.append(item)
                ordered = lanes.get(ordering_partition(item.event, partitions, home))
                if ordered is not None:
                    pending[ordered].events.append(item.event)
                for lane in {own, ordered}:
                    if lane is not None and pending[lane].full(request.batch):
                        await queues[lane].put(pending[lane])
                        pending[lane] = _Share()
        for lane in range(width):
            if pending[lane].items or pending[lane].events:
                await queues[lane].put(pending[lane])
            await queues[lane].put(None)

    async def apply(lane: int) -> None:
        while (share := await queues[lane].get()) is not None:
            await appliers[lane].apply(share)
            applied(len(share.items))

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(read())
            for lane in range(width):
                group.create_task(apply(lane))
    except ExceptionGroup as failed:  # the first failure, as a sequential replay raises it
        raise failed.exceptions[0] from None
    last = restorer.last if restorer is not None else {}
    return {p: streamids.format_id(entry) for p, entry in last.items()}


class _Done(msgspec.Struct, frozen=True):
    """What a worker hands back: how far each restored log goes, and the CPU it spent."""

    last: dict[int, str]
    cpu_seconds: float


def _work(task: _Task, applied: Callable[[int], None]) -> _Done:
    """A worker process's whole life (processes.run): its logging set up as the command's
    (a spawned process inherits none), its own client, its share, closed."""
    configure_logging(task.settings, process="replay-worker")
    structlog.contextvars.bind_contextvars(partitions=list(task.owned))

    async def work() -> dict[int, str]:
        client = async_client(task.settings)
        try:
            return await _apply_owned(client, task, applied)
        finally:
            await client.aclose()

    last = asyncio.run(work())
    return _Done(last, time.process_time())  # since this process started


async def replay(
    redis: aioredis.Redis,
    settings: Settings,
    request: ReplayRequest,
    progress: Progress | None = None,
) -> ReplayResult:
    report: Progress = progress or (lambda phase, done, total, rate: None)
    since = _since(request.since)
    restore = False
    if request.from_archive:
        if not archive.partitions_in(settings.archive_dir):
            raise ReplayError(f"no archive in {settings.archive_dir} (MUSTER_ARCHIVE_DIR)")
        restore = await log_is_empty(redis, settings.partitions)
        if restore and since is not None:
            raise ReplayError(
                "the event log is empty, so this is a restore, which replays the whole "
                "archive: leave out --since"
            )
    chosen = _choose(request, restore)
    workers = workers_for(request, settings)
    if request.redeliver and "accounts" in chosen:
        workers = 1  # routing reads the write side as of each post: in order (_apply_owned)
    log.info(
        "replay starting",
        projections=chosen,
        from_archive=request.from_archive,
        restore=restore,
        workers=workers,
    )
    dropped = 0
    if since is None:
        report("dropping", 0, 0, 0.0)
        dropped = await families.drop(redis, chosen, settings.partitions)
    total = await _total(redis, settings, request)
    if restore:
        await _block_groups(redis, settings.partitions)
    phase = "restoring" if restore else "replaying"
    started = time.monotonic()
    done = 0
    report(phase, 0, total, 0.0)

    def applied(count: int) -> None:
        nonlocal done
        done += count
        elapsed = time.monotonic() - started
        report(phase, done, max(total, done), done / elapsed if elapsed > 0 else 0.0)

    tasks = [
        _Task(
            settings=settings,
            request=request,
            chosen=chosen,
            since=since,
            restore=restore,
            owned=owned_by(w, workers, settings.partitions),
        )
        for w in range(workers)
    ]
    if workers == 1:  # in this process, on the caller's client
        cpu = time.process_time()
        last = await _apply_owned(redis, tasks[0], applied)
        dones = [_Done(last, time.process_time() - cpu)]
    else:
        try:
            dones = await processes.run(_work, tasks, applied, name="muster-replay")
        except processes.WorkerFailed as exc:
            owned = ", ".join(map(str, tasks[exc.index].owned))
            raise ReplayWorkerFailed(
                f"replay worker {exc.index} of {workers} (partitions {owned}) failed: {exc}; "
                "the others were stopped and the projections are partly rebuilt: run the "
                "replay again once the cause is fixed"
            ) from None
    if restore:
        ends = {p: streamids.parse(entry) for done in dones for p, entry in done.last.items()}
        await _release_groups(redis, settings.partitions)
        await _record_archive(redis, settings, ends)
    seconds = time.monotonic() - started
    result = ReplayResult(
        projections=list(chosen),
        source="archive" if request.from_archive else "log",
        restored=restore,
        events=done,
        dropped_keys=dropped,
        seconds=round(seconds, 3),
        events_per_second=round(done / seconds, 1) if seconds > 0 else 0.0,
        workers=workers,
        worker_cpu_seconds=[round(done.cpu_seconds, 3) for done in dones],
    )
    report("done", done, max(total, done), result.events_per_second)
    log.info("replay done", **msgspec.to_builtins(result))
    return result
