"""Fixtures every Muster test may use: a real redis-server the suite owns, and Settings for it.

Redis
- `redis_session`: one redis-server per test session (no persistence), started in a temp dir
  on a free loopback port and killed at the end. Tests don't use it directly:
- `redis_server`: that same server after FLUSHALL, so each test starts from an empty database.
  FLUSHALL only ever goes to the server this suite started — never the machine's 6379.
- `redis_factory`: starts extra servers for one test (each its own port and directory, AOF on or
  off), which the test may stop, kill and `restart()` on the same port and directory; all are
  killed at teardown. Use it for persistence and restart tests, not `redis_server`.
- `settings`: `Settings` pointing at `redis_server`, with timings short enough for tests
  (block 200 ms, claim idle 500 ms, 3 attempts, batch 64); `make_settings(server, **overrides)`
  builds the same for a `redis_factory` server, or with other values.
- `sync_redis` / `aredis`: a sync / asyncio client on `redis_server`, closed at teardown.

Async tests
Async tests and fixtures run on AnyIO's pytest plugin (installed with FastAPI), on asyncio
only: mark the test `@pytest.mark.anyio` (or put `pytestmark = pytest.mark.anyio` at the top of
a module) and write `async def`. Async fixtures are plain `async def` fixtures used by such
tests; `aredis` below is one. Don't call `asyncio.run` inside a test that is marked anyio.
Every client, task and subprocess a test opens must be closed by it: warnings are errors, and
an unclosed connection surfaces as one.

Per-area fixtures (an app, an HTTP client) belong in that area's conftest (tests/api/...).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
import redis.asyncio as aioredis
import structlog
from redis_server import RedisFactory, RedisServer, start_redis_server

from muster.settings import Settings

SettingsFactory = Callable[..., Settings]
"""The `make_settings` fixture: `make_settings(server, **overrides)` → Settings."""


@pytest.fixture(scope="session", autouse=True)
def no_env_file() -> Iterator[None]:
    """`muster` commands run in the test process (cli.main) read no `.env`: one left in the
    working directory by `muster init` must not change what a test runs with. Tests of the
    `.env` itself name their file with MUSTER_ENV_FILE."""
    before = os.environ.get("MUSTER_ENV_FILE")
    os.environ["MUSTER_ENV_FILE"] = os.devnull
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MUSTER_ENV_FILE", None)
        else:
            os.environ["MUSTER_ENV_FILE"] = before


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """AnyIO runs async tests on asyncio only (trio is not a dependency)."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis_server(tmp_path_factory.mktemp("redis-session"))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_server(redis_session: RedisServer) -> RedisServer:
    """The session's server, emptied for this test (and restarted if a test stopped it)."""
    if not redis_session.running:
        redis_session.start()
    with redis_session.client() as client:
        client.flushall()
    return redis_session


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[RedisFactory]:
    """`redis_factory(appendonly=..., appendfsync="always")` → a started server for this test."""
    servers: list[RedisServer] = []

    def start(*, appendonly: bool = False, appendfsync: str = "always") -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        server = start_redis_server(directory, appendonly=appendonly, appendfsync=appendfsync)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """`make_settings(server, **overrides)` → Settings for any server this suite started."""

    def build(server: RedisServer, **overrides: Any) -> Settings:
        data_dir = tmp_path / "var"
        base = Settings(
            redis_url=server.url,
            consumer_batch=64,
            consumer_block_ms=200,
            claim_idle_ms=500,
            max_attempts=3,
            data_dir=data_dir,
            archive_dir=data_dir / "archive",
        )
        return msgspec.structs.replace(base, **overrides)

    return build


@pytest.fixture
def settings(redis_server: RedisServer, make_settings: SettingsFactory) -> Settings:
    return make_settings(redis_server)


@pytest.fixture
def sync_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A sync client on the clean `redis_server`."""
    with redis_server.client() as client:
        yield client


@pytest.fixture
async def aredis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on the clean `redis_server` (for `@pytest.mark.anyio` tests)."""
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=10.0)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Tests that run an entrypoint configure structlog onto pytest's captured stderr, which
    closes after the test: put structlog back so the next test does not write to it."""
    yield
    structlog.reset_defaults()
