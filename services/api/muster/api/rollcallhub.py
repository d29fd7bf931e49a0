"""The roll-call hub: live reports (GET /v1/rollcalls/{id}/stream) for any number of
connections at the cost of one reader per api process and one report read per roll-call
watched, never one per connection.

The timeline worker announces each roll-call change to keys.ROLLCALL_LIVE after its event
(records.RollCallNews). One blocking XREAD per process routes an entry to the *room* of its
roll-call, if anyone here watches it. A room re-reads the report (rollcalls.report: one
pipelined round trip) when told of a change, at most every REPORT_INTERVAL_S, and hands the
same frame to every watcher; help answers go out as they come. Every report frame of a room
comes from that one loop, so a watcher never gets an older report after a newer one, and a
watcher who joins gets the room's latest frame at once. A watcher that cannot keep up is
ended rather than buffered without bound; its client reconnects and gets the report afresh.
A room ends its watchers after the report that shows the roll-call closed (closed by its
author, or past the grace: the room wakes up for that without being told).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from starlette.responses import StreamingResponse

from muster import keys
from muster.api import rollcalls
from muster.api.livehub import StreamTail
from muster.api.state import ApiState
from muster.events import utcnow
from muster.records import RollCallNews, rollcall_news_of
from muster.tasks import cancel_and_wait

log = structlog.get_logger("muster.api.rollcallhub")

REPORT_INTERVAL_S = 0.5
"""The shortest time between two reports a room sends (a crowd answering is one report each
half second, not one per answer)."""
WATCHER_QUEUE_MAX = 256
"""Frames waiting for one connection before it is ended as too slow."""
END = None
"""What a watcher's queue holds after the last frame."""
HEARTBEAT_S = 15.0

_json = msgspec.json.Encoder()


def report_frame(report: Any) -> str:
    return f"event: report\ndata: {_json.encode(report).decode()}\n\n"


def help_frame(news: RollCallNews) -> str:
    data = {"handle": news.recipient, "option": news.option, "note": news.note, "at": news.at}
    return f"event: help\ndata: {_json.encode(data).decode()}\n\n"


@dataclass(eq=False)
class Watcher:
    """One connection's queue of SSE frames (END after the last)."""

    queue: asyncio.Queue[str | None] = field(
        default_factory=lambda: asyncio.Queue(WATCHER_QUEUE_MAX)
    )
    overflowed: bool = False

    def put(self, frame: str | None) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.overflowed = True


class Room:
    """The watchers of one roll-call in this process, and the loop that reads its report."""

    def __init__(self, hub: RollCallHub, rc: rollcalls.Loaded) -> None:
        self.hub = hub
        self.rc = rc
        self.watchers: set[Watcher] = set()
        self.changed = asyncio.Event()
        self.changed.set()  # the first report, at once
        self.reload = False
        self.latest: str | None = None
        self.task: asyncio.Task[None] | None = None

    def broadcast(self, frame: str | None) -> None:
        for watcher in list(self.watchers):
            watcher.put(frame)

    async def run(self) -> None:
        try:
            while True:
                await self._wait()
                if not self.watchers:
                    return  # everyone left (in case the cancel that says so was lost)
                self.changed.clear()
                try:
                    if self.reload:
                        self.reload = False
                        self.rc = await rollcalls.load(self.hub.st, self.rc.id)
                    report = await rollcalls.report(self.hub.st, self.rc)
                except RedisError as exc:
                    log.warning("roll-call report unreadable; retrying", error=str(exc))
                    self.changed.set()
                    await asyncio.sleep(1.0)
                    continue
                except Exception:  # a bug: end the streams (clients reconnect) rather than hang
                    log.exception("roll-call room failed", rollcall=self.rc.id)
                    self.broadcast(END)
                    return
                self.latest = report_frame(report)
                self.broadcast(self.latest)
                if report.state != "open":
                    self.broadcast(END)
                    return
                await asyncio.sleep(REPORT_INTERVAL_S)
        finally:
            if self.hub.rooms.get(self.rc.id) is self:
                del self.hub.rooms[self.rc.id]

    async def _wait(self) -> None:
        """Until told of a change, or until the grace runs out (closed by time)."""
        left = (self.rc.grace_until - utcnow()).total_seconds()
        try:
            async with asyncio.timeout(max(left, 0.0) + 0.05):
                await self.changed.wait()
        except TimeoutError:
            pass


class RollCallHub(StreamTail):
    stream = keys.ROLLCALL_LIVE
    what = "roll-call hub"

    def __init__(self, redis: aioredis.Redis, st: ApiState, *, block_ms: int) -> None:
        super().__init__(redis, block_ms=block_ms)
        self.st = st
        self.rooms: dict[str, Room] = {}

    async def stop(self) -> None:
        await super().stop()
        for room in list(self.rooms.values()):
            await cancel_and_wait(room.task)

    def join(self, rc: rollcalls.Loaded) -> Watcher:
        """A new watcher of `rc`: its first frame is the room's latest report, or the one the
        room is about to read."""
        watcher = Watcher()
        room = self.rooms.get(rc.id)
        if room is None:
            room = self.rooms[rc.id] = Room(self, rc)
            room.task = asyncio.create_task(room.run())
        elif room.latest is not None:
            watcher.put(room.latest)
        room.watchers.add(watcher)
        return watcher

    def leave(self, rc_id: str, watcher: Watcher) -> None:
        room = self.rooms.get(rc_id)
        if room is None:
            return
        room.watchers.discard(watcher)
        if not room.watchers and room.task is not None:
            room.task.cancel()
            del self.rooms[rc_id]  # a watcher who joins now gets a new room

    def _handle(self, entry_id: str, fields: Any) -> None:
        self._route(rollcall_news_of(fields))

    def _route(self, news: RollCallNews) -> None:
        room = self.rooms.get(news.rollcall)
        if room is None:
            return  # nobody here watches it
        if news.kind == "help":
            room.broadcast(help_frame(news))
        elif news.kind in ("extended", "closed"):
            room.reload = True
        room.changed.set()


def sse(hub: RollCallHub, rc: rollcalls.Loaded) -> StreamingResponse:
    """The SSE response of one watcher of `rc` (the caller checked who may watch)."""
    watcher = hub.join(rc)

    async def frames() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            queue = watcher.queue
            while not watcher.overflowed:
                try:
                    async with asyncio.timeout(HEARTBEAT_S):
                        frame = await queue.get()
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                chunk: list[str] = []
                while frame is not END:
                    chunk.append(frame)
                    if queue.empty():
                        break
                    frame = queue.get_nowait()
                if chunk:
                    yield "".join(chunk)
                if frame is END:
                    return
        finally:
            hub.leave(rc.id, watcher)

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
