"""A crowd is not a fault: however many clients come at once, the API answers every request,
slower if it must, or 429 with Retry-After; 503 `unavailable` stays for a Redis that is down.

The crowd runs against a real uvicorn (the suite's `live_server`, in a thread of this process)
with 1,000 concurrent connections reading home timelines, then writing posts, then both at once.
Before the bounded waiting pool (muster.api.crowd), redis-py's default pool of 100 raised
"Too many connections" from the 101st command in flight and most of the crowd got 503.

The rest pins what the fix relies on: the pool's wait is first come first served and ends in
PoolBusy (429 `busy` through the app), a Redis that does not answer is still a plain
ConnectionError (503), and live streams hold none of the requests' connections.
"""

from __future__ import annotations

import asyncio
import collections
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from redis_server import free_port

from api.conftest import ADMIN_TOKEN, LiveServer, OpenApi, assert_error
from muster import keys
from muster.api import crowd
from muster.connection import PoolBusy, WaitingPool, waiting_client
from muster.errors import ConfigError
from muster.settings import Settings, load_settings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

Serve = Callable[[Settings], AbstractContextManager[LiveServer]]

CROWD = 1000
"""Concurrent connections, each with one request in flight at once."""
PEOPLE = 10
"""People the crowd reads and writes as (each token is cached by the app once seen)."""
STORM_TIMEOUT_S = 60.0
"""Bound on one storm: every request answered (or counted as failed) by then."""
REQUEST_TIMEOUT_S = 30.0


# --- the crowd ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    method: str
    path: str
    token: str
    json: dict[str, Any] | None = None
    idempotency_key: str | None = None


@dataclass
class Tally:
    """What a storm got back: status counts, and every refusal as (status, code, Retry-After)."""

    calls: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    refusals: collections.Counter[tuple[int, str, str | None]] = field(
        default_factory=collections.Counter
    )
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    connections_opened: int = 0
    seconds: float = 0.0

    @property
    def succeeded(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    def __str__(self) -> str:
        return (
            f"{self.calls} calls in {self.seconds:.1f} s over {self.connections_opened} new "
            f"connections: statuses {dict(self.statuses)}, refusals {dict(self.refusals)}, "
            f"failures {dict(self.failures)}"
        )


@pytest.fixture
def open_files() -> Iterator[None]:
    """Both ends of every crowd connection live in this process: lift the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * CROWD + 1024
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} open files; the hard limit (ulimit -Hn) is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def crowd_server(api_settings: Settings, live_server: Serve) -> Iterator[LiveServer]:
    """The API as `muster api` runs it, on defaults: every setting of the pool as shipped."""
    with live_server(api_settings) as running:
        yield running


async def storm(session: aiohttp.ClientSession, url: str, calls: list[Call]) -> Tally:
    """Every call at once, each on its own connection; what came back."""
    tally = Tally(calls=len(calls))
    go = asyncio.Event()

    async def one(call: Call) -> None:
        headers = {"Authorization": f"Bearer {call.token}"}
        if call.idempotency_key is not None:
            headers["Idempotency-Key"] = call.idempotency_key
        await go.wait()
        try:
            async with session.request(
                call.method, url + call.path, json=call.json, headers=headers
            ) as response:
                body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            tally.failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
            return
        tally.statuses[response.status] += 1
        if not 200 <= response.status < 300:
            try:
                code = str(msgspec.json.decode(body)["error"]["code"])
            except (msgspec.DecodeError, KeyError, TypeError):
                code = repr(body[:60])
            tally.refusals[(response.status, code, response.headers.get("Retry-After"))] += 1

    tasks = [asyncio.create_task(one(call)) for call in calls]
    started = time.monotonic()
    go.set()
    try:
        async with asyncio.timeout(STORM_TIMEOUT_S):
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    tally.seconds = time.monotonic() - started
    return tally


def assert_answered(tally: Tally) -> None:
    """Every request answered: 2xx, or 429 with Retry-After (busy or backpressure); no 503,
    no dropped connection; and most of them served."""
    assert not tally.failures, tally
    assert 503 not in tally.statuses, tally
    for status, code, retry_after in tally.refusals:
        assert status == 429, tally
        assert code in {"busy", "backpressure"}, tally
        assert retry_after is not None, tally
        assert int(retry_after) >= 1, tally
    assert tally.succeeded >= 0.9 * tally.calls, tally


async def test_a_crowd_of_1000_connections_is_answered_not_failed(
    open_files: None, crowd_server: LiveServer, aredis: aioredis.Redis
) -> None:
    url = crowd_server.url
    opened = 0  # TCP connections the client has opened so far

    async def count_connection(*_: Any) -> None:
        nonlocal opened
        opened += 1

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(count_connection)
    connector = aiohttp.TCPConnector(limit=CROWD, limit_per_host=CROWD)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, trace_configs=[trace]
    ) as session:
        tokens = []
        for n in range(PEOPLE):
            async with session.post(
                url + "/v1/accounts",
                json={"handle": f"crowd{n}", "kind": "person"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as created:
                assert created.status == 201, await created.text()
                tokens.append((await created.json())["token"])

        def read(i: int) -> Call:
            return Call("GET", "/v1/timelines/home", tokens[i % PEOPLE])

        def write(i: int) -> Call:
            # Half with an Idempotency-Key: the checked append (a script), half the bare XADD.
            key = f"crowd-{i}" if i % 2 else None
            body = {"text": f"crowd post {i}"}
            return Call("POST", "/v1/posts", tokens[i % PEOPLE], body, key)

        storms = {
            "reads": [read(i) for i in range(CROWD)],
            "writes": [write(i) for i in range(CROWD)],
            "both": [read(i) if i % 2 else write(CROWD + i) for i in range(CROWD)],
        }
        for name, calls in storms.items():
            already = opened
            before = int(await aredis.xlen(keys.events(0)))
            tally = await storm(session, url, calls)
            tally.connections_opened = opened - already
            print(f"{name}: {tally}", file=sys.stderr)
            assert_answered(tally)
            # A 202 is in the log; a refusal left nothing there.
            appended = int(await aredis.xlen(keys.events(0))) - before
            assert appended == tally.statuses[202], (name, appended, tally)
    # The client opens a connection only when every one it has is busy: 1,000 were at once.
    assert opened >= CROWD


# --- what the fix relies on -------------------------------------------------------------------
async def test_a_full_pool_serves_waiters_in_turn_then_says_busy(settings: Settings) -> None:
    client = waiting_client(settings, connections=1, wait_s=0.3)
    pool = client.connection_pool
    assert isinstance(pool, WaitingPool)
    try:
        async with asyncio.timeout(10):
            held = await pool.get_connection()
            served: list[int] = []

            async def waiter(n: int) -> None:
                await client.incr("turns")
                served.append(n)

            waiters = [asyncio.create_task(waiter(n)) for n in range(5)]
            await asyncio.sleep(0)  # each waiter reaches the pool, in the order created
            await pool.release(held)
            await asyncio.gather(*waiters)
            assert served == [0, 1, 2, 3, 4]

            held = await pool.get_connection()
            waited = time.monotonic()
            with pytest.raises(PoolBusy) as busy:
                await client.incr("turns")
            assert 0.25 < time.monotonic() - waited < 5
            # Still a MaxConnectionsError, so a redis ConnectionError to code that retries.
            assert isinstance(busy.value, MaxConnectionsError)
            await pool.release(held)
            assert int(await client.incr("turns")) == 6  # the turn came back
    finally:
        await client.aclose()


async def test_a_redis_that_does_not_answer_is_no_busy_pool(settings: Settings) -> None:
    nobody = msgspec.structs.replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = waiting_client(nobody, connections=1, wait_s=0.3)
    try:
        async with asyncio.timeout(30):
            for _ in range(2):  # and the failed connect gave its turn back
                with pytest.raises(RedisConnectionError) as down:
                    await client.ping()
                assert not isinstance(down.value, MaxConnectionsError), down.value
    finally:
        await client.aclose()


async def test_no_descriptor_for_a_connection_is_busy_not_down(settings: Settings) -> None:
    client = waiting_client(settings, connections=2, wait_s=0.3)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        # The lowest free descriptor as the limit: no new one can be opened.
        lowest = os.open(os.devnull, os.O_RDONLY)
        os.close(lowest)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
        try:
            with pytest.raises(PoolBusy, match="file descriptor"):
                await client.ping()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        async with asyncio.timeout(10):
            assert await client.ping()
    finally:
        await client.aclose()


async def test_the_app_answers_a_busy_pool_429_busy(
    api_settings: Settings, open_api: OpenApi
) -> None:
    settings = msgspec.structs.replace(api_settings, redis_connections=1)
    async with open_api(settings) as api:
        token = await api.person("mia")
        pool = api.state.redis.connection_pool
        assert isinstance(pool, WaitingPool)
        pool.timeout = 0.2  # not the 5 s a request waits in production
        before = await api.log_length()
        held = await pool.get_connection()
        try:
            home = await api.call("GET", "/v1/timelines/home", token=token)
            assert_error(home, 429, "busy")
            post = await api.call("POST", "/v1/posts", token=token, json={"text": "wait"})
            assert_error(post, 429, "busy")
        finally:
            await pool.release(held)
        assert await api.log_length() == before
        assert (await api.call("GET", "/v1/timelines/home", token=token)).status_code == 200


async def test_live_streams_hold_no_connection_requests_need(
    api_settings: Settings, live_server: Serve
) -> None:
    settings = msgspec.structs.replace(api_settings, redis_connections=2)
    streams = 20
    with live_server(settings) as server:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.timeout(30):
            async with session.post(
                server.url + "/v1/accounts",
                json={"handle": "mia", "kind": "person"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as created:
                token = (await created.json())["token"]
            auth = {"Authorization": f"Bearer {token}"}
            opened = []
            try:
                for _ in range(streams):
                    live = await session.get(server.url + "/v1/stream", headers=auth)
                    opened.append(live)
                    assert live.status == 200
                    assert (await live.content.readline()).startswith(b"retry:")

                async def home() -> int:
                    async with session.get(server.url + "/v1/timelines/home", headers=auth) as r:
                        return r.status

                started = time.monotonic()
                assert await asyncio.gather(*(home() for _ in range(streams))) == [200] * streams
                assert time.monotonic() - started < 4  # no request waited out the pool
            finally:
                for live in opened:
                    live.close()


def test_the_api_process_lifts_its_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to lift")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        before, after = crowd.raise_open_files_limit()
        assert before == 256
        assert after > 256
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (after, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("raw", ["0", "10001", "many"])
def test_redis_connections_is_refused_unless_a_count(raw: str) -> None:
    with pytest.raises(ConfigError, match="MUSTER_REDIS_CONNECTIONS"):
        load_settings({"MUSTER_REDIS_CONNECTIONS": raw})
    assert load_settings({"MUSTER_REDIS_CONNECTIONS": "8"}).redis_connections == 8
