"""GET /v1/stream (SSE) on a real uvicorn, fed by the real timeline worker.

- A member receives the posts of the accounts they follow and the DMs sent to them, in
  order, each with an `id:`; nothing meant for others.
- Dropped and resumed with Last-Event-ID, the stream sends exactly what was missed — no
  gap, no repeat — then goes on live; also when the posts race the reconnection.
- A heartbeat comment keeps an idle stream open.
- An external follower's stream never carries an internal post.
- Resumed from an entry older than MUSTER_LIVE_RETENTION entries, the stream says
  `event: reset` (reload by REST) before going on: a gap is announced, never silent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest

from muster import events, keys
from muster.api.routes import stream as stream_route
from muster.ids import IdGenerator
from muster.settings import Settings
from timeline.conftest import OpenStack, Stack, bearer

pytestmark = pytest.mark.anyio

EVENT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    data: dict[str, Any]


def entry_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


@dataclass
class Sse:
    """One open /v1/stream response, parsed as the SSE spec says (fields, comments, blank lines);
    comments (heartbeats) met while waiting for an event are kept in `comments`."""

    response: httpx.Response
    lines: AsyncIterator[str]
    comments: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, stack: Stack, token: str, last_event_id: str | None = None) -> Sse:
        headers = bearer(token)
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        request = stack.client.build_request("GET", "/v1/stream", headers=headers)
        response = await stack.client.send(request, stream=True)
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        sse = cls(response, response.aiter_lines())
        first = await sse.block()  # `retry:` comes first
        assert set(first) == {"retry"}, first
        assert int(first["retry"]) > 0
        return sse

    async def block(self) -> dict[str, str]:
        """The fields of the next block (up to a blank line); comments are recorded aside."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            async for line in self.lines:
                if line == "":
                    if fields:
                        return fields
                    continue  # a comment's block
                if line.startswith(":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                fields[name] = fields[name] + "\n" + value if name in fields else value
        raise AssertionError("the stream ended")

    async def heartbeat(self) -> str:
        """The next comment line, on a stream with nothing else to send."""
        async with asyncio.timeout(EVENT_TIMEOUT_S):
            async for line in self.lines:
                if line.startswith(":"):
                    return line
                assert line == "", f"{line!r} where only a heartbeat was due"
        raise AssertionError("the stream ended")

    async def next(self) -> Event:
        while True:
            fields = await self.block()
            if "data" in fields:
                assert set(fields) == {"id", "event", "data"}, fields
                return Event(fields["id"], fields["event"], json.loads(fields["data"]))

    async def take(self, count: int) -> list[Event]:
        return [await self.next() for _ in range(count)]

    async def close(self) -> None:
        await self.response.aclose()


def summary(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.kind, e.data["id"]) for e in events]


def assert_ordered(events: list[Event]) -> None:
    keys = [entry_key(e.id) for e in events]
    assert keys == sorted(keys), [e.id for e in events]
    assert len(set(keys)) == len(keys), [e.id for e in events]


@pytest.fixture
def stream_settings(timeline_settings: Settings) -> Settings:
    return msgspec.structs.replace(timeline_settings, partitions=2)


async def test_stream_delivers_in_order_and_resumes_without_gaps(
    stream_settings: Settings, open_live_stack: OpenStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_route, "HEARTBEAT_S", 0.3)
    async with open_live_stack(stream_settings) as s:
        pat = await s.person("pat")
        mia = await s.person("mia")
        dan = await s.person("dan")
        eve = await s.person("eve", "external")
        await s.team("ops", "pat")
        await s.team("infra", "pat")  # nobody here follows infra
        await s.follow(mia, "ops")
        await s.follow(eve, "ops")
        await s.settle()

        mia_stream = await Sse.open(s, mia)
        eve_stream = await Sse.open(s, eve)
        eve_seen: list[Event] = []
        try:
            p1 = await s.post(pat, "internal 1", as_="ops")
            p2 = await s.post(pat, "public 2", as_="ops", visibility="public")
            await s.post(pat, "infra, not followed", as_="infra", visibility="public")
            d1 = await s.dm(dan, "mia", "dan to mia")
            d_eve = await s.dm(pat, "eve", "pat to eve")  # not mia's
            p3 = await s.post(pat, "internal 3", as_="ops")
            got = await mia_stream.take(4)
            assert summary(got) == [
                ("post", p1["id"]),
                ("post", p2["id"]),
                ("dm", d1["id"]),
                ("post", p3["id"]),
            ]
            assert [e.data for e in got] == [p1, p2, d1, p3]  # the objects the writes answered
            assert_ordered(got)
            eve_seen += await eve_stream.take(2)
            assert summary(eve_seen) == [("post", p2["id"]), ("dm", d_eve["id"])]

            # an idle stream gets heartbeats
            assert await mia_stream.heartbeat() == ": keep-alive"

            # --- drop, miss some, resume: exactly the missed ones, then live ----------------
            last = got[-1].id
            await mia_stream.close()
            p4 = await s.post(pat, "public 4", as_="ops", visibility="public")
            d2 = await s.dm(dan, "mia", "dan to mia, while away")
            p5 = await s.post(pat, "internal 5", as_="ops")
            await s.settle()
            mia_stream = await Sse.open(s, mia, last_event_id=last)
            resumed = await mia_stream.take(3)
            assert summary(resumed) == [("post", p4["id"]), ("dm", d2["id"]), ("post", p5["id"])]
            assert_ordered([got[-1], *resumed])
            p6 = await s.post(pat, "internal 6, live again", as_="ops")
            live = await mia_stream.next()
            assert summary([live]) == [("post", p6["id"])]
            assert_ordered([resumed[-1], live])

            # --- again, with the posts racing the reconnection --------------------------------
            last = live.id
            await mia_stream.close()
            racing = [await s.post(pat, "public 7", as_="ops", visibility="public")]
            reconnect = asyncio.ensure_future(Sse.open(s, mia, last_event_id=last))
            for n in range(8, 14):
                racing.append(await s.post(pat, f"internal {n}", as_="ops"))
                await asyncio.sleep(0.005)
            mia_stream = await reconnect
            resumed = await mia_stream.take(len(racing))
            assert summary(resumed) == [("post", p["id"]) for p in racing]
            assert_ordered([live, *resumed])
            marker = await s.post(pat, "public marker", as_="ops", visibility="public")
            assert summary([await mia_stream.next()]) == [("post", marker["id"])]

            # --- the external follower: public posts of ops and her DMs, nothing else ---------
            eve_seen += await eve_stream.take(3)
            publics = [p4, racing[0], marker]
            assert summary(eve_seen) == [
                ("post", p2["id"]),
                ("dm", d_eve["id"]),
                *[("post", p["id"]) for p in publics],
            ]
            assert all(e.data.get("visibility", "public") == "public" for e in eve_seen)
            assert_ordered(eve_seen)
            # eve resuming from the start of it all still gets no internal post
            eve_again = await Sse.open(s, eve, last_event_id=eve_seen[0].id)
            try:
                replay = await eve_again.take(len(eve_seen) - 1)
                assert summary(replay) == summary(eve_seen[1:])
            finally:
                await eve_again.close()
        finally:
            await mia_stream.close()
            await eve_stream.close()


async def test_stream_needs_a_person_and_a_valid_last_event_id(
    stream_settings: Settings, open_live_stack: OpenStack
) -> None:
    async with open_live_stack(stream_settings) as s:
        mia = await s.person("mia")
        assert (await s.call("GET", "/v1/stream")).status_code == 401
        bad = await s.call("GET", "/v1/stream", token=mia, headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 422, bad.text


async def test_resume_from_beyond_the_retention_window_sends_reset(
    stream_settings: Settings, open_live_stack: OpenStack
) -> None:
    settings = msgspec.structs.replace(stream_settings, live_retention=100)
    async with open_live_stack(settings) as s:
        pat = await s.person("pat")
        mia = await s.person("mia")
        await s.team("ops", "pat")
        await s.follow(mia, "ops")
        await s.settle()
        mia_stream = await Sse.open(s, mia)
        try:
            first = await s.post(pat, "before the flood", as_="ops")
            seen = await mia_stream.next()
            assert seen.data == first
        finally:
            await mia_stream.close()

        # 300 more posts while mia is away: LIVE keeps ~100 of them (MAXLEN ~ 100)
        ids = IdGenerator(node=900)
        flood = [
            events.PostPublished(
                id=ids.next(),
                actor="pat",
                at=events.utcnow(),
                author="pat",
                as_account="ops",
                text=f"flood #{n}",
            )
            for n in range(300)
        ]
        stream = keys.events(keys.partition_of("ops", settings.partitions))
        async with s.redis.pipeline(transaction=False) as pipe:
            for event in flood:
                pipe.xadd(stream, {events.STREAM_FIELD: events.encode(event)})
            await pipe.execute()
        await s.settle()
        kept = await s.redis.xlen(keys.LIVE)
        assert 100 <= kept < 300, kept

        mia_stream = await Sse.open(s, mia, last_event_id=seen.id)
        try:
            assert await mia_stream.block() == {"event": "reset", "data": "{}"}
            resumed = await mia_stream.take(kept)  # every post still in LIVE, in order
            assert [e.data["id"] for e in resumed] == [e.id for e in flood][-kept:]
            assert_ordered(resumed)
        finally:
            await mia_stream.close()
