"""GET /v1/rollcalls/{id}/stream (SSE) on a real uvicorn, fed by the real timeline worker.

- A watcher gets the report on connect, again as answers come (coalesced), a `help` event per
  new help answer, heartbeats when idle, and the final report when the roll-call closes —
  then the stream ends.
- Many watchers of one roll-call cost one report read per change window, not one each, and a
  roll-call nobody watches any more costs no reads at all.
- Only those who run the roll-call may watch it (401 without a token, 404 for the others).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from harness import app_running, asgi_client

from muster import keys
from muster.api import rollcallhub, rollcalls
from muster.records import rollcall_news_of
from muster.settings import Settings
from timeline.conftest import OpenStack, Stack, bearer, timeline_worker
from timeline.test_rollcalls import open_rollcall, people

pytestmark = pytest.mark.anyio
WAIT_S = 10.0


@dataclass
class Watch:
    """One open roll-call stream, parsed as the SSE spec says; heartbeats kept aside."""

    response: Any
    lines: AsyncIterator[str]
    comments: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, stack: Stack, rc: str, token: str) -> Watch:
        request = stack.client.build_request(
            "GET", f"/v1/rollcalls/{rc}/stream", headers=bearer(token)
        )
        response = await stack.client.send(request, stream=True)
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        return cls(response, response.aiter_lines())

    async def next(self) -> tuple[str, dict[str, Any]]:
        """The next event (name, data); None-like end raises StopAsyncIteration."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(WAIT_S):
            async for line in self.lines:
                if line == "":
                    if "data" in fields:
                        return fields["event"], json.loads(fields["data"])
                    fields = {}
                    continue
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise StopAsyncIteration

    async def report_where(self, check: Any) -> dict[str, Any]:
        """Reports until one passes `check` (help events met on the way are skipped)."""
        while True:
            kind, data = await self.next()
            if kind == "report" and check(data):
                return data

    async def heartbeat(self) -> str:
        """The next comment line, on a stream with nothing else to send."""
        async with asyncio.timeout(WAIT_S):
            async for line in self.lines:
                if line.startswith(":"):
                    return line
                assert line == "", f"{line!r} where only a heartbeat was due"
        raise AssertionError("the stream ended")

    async def ended(self) -> bool:
        async with asyncio.timeout(WAIT_S):
            async for line in self.lines:
                assert line == "" or line.startswith(":"), line
        return True

    async def close(self) -> None:
        await self.response.aclose()


@pytest.fixture
def rc_settings(timeline_settings: Settings) -> Settings:
    return msgspec.structs.replace(timeline_settings, partitions=4)


@pytest.fixture
def hubs(monkeypatch: pytest.MonkeyPatch) -> list[rollcallhub.RollCallHub]:
    """The api's roll-call hub, once started."""
    started: list[rollcallhub.RollCallHub] = []
    real = rollcallhub.RollCallHub.start

    async def start(self: rollcallhub.RollCallHub) -> None:
        started.append(self)
        await real(self)

    monkeypatch.setattr(rollcallhub.RollCallHub, "start", start)
    return started


@pytest.fixture
def report_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every report read (the api runs in this process, on a thread)."""
    reads: list[str] = []
    real = rollcalls.report

    async def counted(st: Any, rc: rollcalls.Loaded) -> Any:
        reads.append(rc.id)
        return await real(st, rc)

    monkeypatch.setattr(rollcalls, "report", counted)
    return reads


async def test_a_live_report_from_open_to_close(
    rc_settings: Settings,
    open_live_stack: OpenStack,
    monkeypatch: pytest.MonkeyPatch,
    report_reads: list[str],
) -> None:
    monkeypatch.setattr(rollcallhub, "HEARTBEAT_S", 0.3)
    async with open_live_stack(rc_settings) as s:
        boss = await s.person("boss")
        tokens = await people(s, ["ana", "ben", "cai", "dee"], follow="boss")
        outsider = await s.person("zed")
        rc = await open_rollcall(s, boss)
        path = f"/v1/rollcalls/{rc}"

        # who may watch: those who run it
        assert (await s.client.get(f"{path}/stream")).status_code == 401
        for token in (outsider, tokens["ana"]):
            refused = await s.client.get(f"{path}/stream", headers=bearer(token))
            assert refused.status_code == 404
            assert refused.json()["error"]["code"] == "no_such_rollcall"

        watch = await Watch.open(s, rc, boss)
        admin = await Watch.open(s, rc, s.admin_token)
        try:
            for w in (watch, admin):
                kind, first = await w.next()
                assert kind == "report"
                assert first["state"] == "open"
                assert first["counts"]["targeted"] == 4
                assert first["counts"]["answered"] == 0

            await s.ok("POST", f"{path}/responses", token=tokens["ana"], json={"option": "1"})
            seen = await watch.report_where(lambda r: r["counts"]["answered"] == 1)
            assert seen["counts"]["by_option"]["1"] == 1

            await s.ok(
                "POST",
                f"{path}/responses",
                token=tokens["ben"],
                json={"option": "2", "note": "stuck, 3rd floor"},
            )
            kind, data = await watch.next()
            while kind != "help":
                kind, data = await watch.next()
            assert (data["handle"], data["option"], data["note"]) == (
                "ben",
                "2",
                "stuck, 3rd floor",
            )
            seen = await watch.report_where(lambda r: r["help_open"] == 1)
            assert seen["counts"]["answered"] == 2
            await admin.report_where(lambda r: r["help_open"] == 1)

            await s.ok("POST", f"{path}/help/ben/handled", token=boss)
            await watch.report_where(lambda r: r["help_open"] == 0)
            # idle: heartbeats keep it open
            assert await watch.heartbeat() == ": keep-alive"

            # closed: the final report, then the stream ends
            await s.ok("POST", f"{path}/close", token=boss)
            for w in (watch, admin):
                final = await w.report_where(lambda r: r["state"] == "closed")
                assert final["counts"]["answered"] == 2
                assert await w.ended()
        finally:
            await watch.close()
            await admin.close()

        # a closed roll-call: the report, and the end, at once
        late = await Watch.open(s, rc, boss)
        try:
            kind, data = await late.next()
            assert (kind, data["state"]) == ("report", "closed")
            assert await late.ended()
        finally:
            await late.close()


async def test_many_watchers_share_one_report_reader(
    rc_settings: Settings,
    open_live_stack: OpenStack,
    report_reads: list[str],
    hubs: list[rollcallhub.RollCallHub],
) -> None:
    async with open_live_stack(rc_settings) as s:
        boss = await s.person("boss")
        names = [f"p{i}" for i in range(12)]
        tokens = await people(s, names, follow="boss")
        rc = await open_rollcall(s, boss)
        path = f"/v1/rollcalls/{rc}"

        watchers = [await Watch.open(s, rc, boss) for _ in range(20)]
        try:
            for w in watchers:
                kind, _ = await w.next()
                assert kind == "report"
            (hub,) = hubs
            assert list(hub.rooms) == [rc]
            report_reads.clear()
            began = time.monotonic()
            await asyncio.gather(
                *(
                    s.ok("POST", f"{path}/responses", token=tokens[n], json={"option": "1"})
                    for n in names
                )
            )
            for w in watchers:
                await w.report_where(lambda r: r["counts"]["answered"] == len(names))
            # one reader for the room: at most a read per change window, however many watch
            # (a read per watcher would be 20 a window)
            windows = (time.monotonic() - began) / rollcallhub.REPORT_INTERVAL_S
            assert 1 <= len(report_reads) <= windows + 2, (len(report_reads), windows)
        finally:
            for w in watchers:
                await w.close()

        # nobody watches any more: the room is gone, and answers cost no report read
        async with asyncio.timeout(WAIT_S):
            while hub.rooms:  # noqa: ASYNC110 - the server sees the connections go
                await asyncio.sleep(0.02)
        report_reads.clear()
        await s.ok("PUT", f"{path}/responses/p0", token=boss, json={"option": "2"})
        await s.settle()
        assert not hub.rooms
        assert report_reads == []


async def test_a_help_answer_is_announced_before_it_is_counted(
    rc_settings: Settings, aredis: aioredis.Redis
) -> None:
    """An answer's counts are written as it is appended, before the timeline worker reads it;
    a room reading the report for any other change in between would count a help answer
    before its `help` event. So the api announces a help answer before appending it: with no
    worker running, the `help` entry is there as soon as the answer is; the worker, back,
    announces the other changes and never that one again."""
    async with app_running(rc_settings) as app, asgi_client(app) as client:
        s = Stack(client=client, redis=aredis, settings=rc_settings)
        async with timeline_worker(rc_settings):
            await s.settle()
            boss = await s.person("boss")
            tokens = await people(s, ["ana", "ben"], follow="boss")
            rc = await open_rollcall(s, boss)
        path = f"/v1/rollcalls/{rc}/responses"
        await s.ok("POST", path, token=tokens["ana"], json={"option": "1"})
        await s.ok("POST", path, token=tokens["ben"], json={"option": "2", "note": "floor 3"})

        async def news() -> list[tuple[str, str, str]]:
            entries: Any = await aredis.xrange(keys.ROLLCALL_LIVE)
            found = [rollcall_news_of(fields) for _, fields in entries]
            return [(n.kind, n.recipient, n.note) for n in found if n.rollcall == rc]

        assert await news() == [("help", "ben", "floor 3")]
        report = await s.ok("GET", f"/v1/rollcalls/{rc}", token=boss)
        assert report["help_open"] == 1
        async with timeline_worker(rc_settings):
            await s.settle()
        assert await news() == [("help", "ben", "floor 3"), ("changed", "", "")]
