"""Fixtures for the web tests: the real api on uvicorn, the real timeline worker, a real browser.

- `web`: the app (create_app) on uvicorn on a free loopback port, and the timeline worker
  (make_handler on the shared consumer loops), both in one background thread with its own
  event loop, against the suite's redis-server. `WebStack` makes accounts, follows, posts and
  DMs through the JSON API (httpx), and `settle()` waits until the worker has projected
  everything (failing at once on a dead letter). Stopped (bounded) at teardown.
- `browser`: Debian's Chromium (/usr/bin/chromium), headless, driven by Playwright's sync
  API. Never downloaded by Playwright. Missing Chromium or Playwright skips the browser tests
  with the reason, except under CI (CI=true), where it fails them.
- `context`: a fresh browser context (no cookies) per call, closed at teardown;
  `shot(page, name)` saves a screenshot to tests/artifacts/ (gitignored).

Tests here are plain (sync) functions: Playwright's sync API must not run inside an event
loop, so the servers run in their own thread instead of the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest
import redis
import uvicorn
from redis.exceptions import ResponseError
from redis_server import RedisServer, free_port

from muster import events, keys
from muster.api.app import create_app
from muster.api.web import readback
from muster.connection import async_client, text
from muster.settings import Settings
from muster.timeline.worker import GROUP, make_handler
from muster.worker import build_loops, event_log_streams

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

ADMIN_TOKEN = "adm-W3b7Kq2xR9pN4tZ8wB6cY1mH5jD0sFgE"
"""The bootstrap token of `admin` in these tests."""

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SETTLE_TIMEOUT_S = 15.0
START_TIMEOUT_S = 20.0


# --- the stack: api + timeline worker in a background thread ----------------------------------
class Background:
    """uvicorn serving the app, and the timeline worker, on one event loop in one thread."""

    def __init__(self, settings: Settings, port: int) -> None:
        self.settings = settings
        self.port = port
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name=f"web-stack-{port}", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready.wait(0.05):
            if self.failure is not None or not self.thread.is_alive():
                raise RuntimeError(f"the web stack did not start: {self.failure!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the web stack did not start within {START_TIMEOUT_S}s")

    def close(self) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(timeout=20.0)
        assert not self.thread.is_alive(), "the web stack did not stop within 20 s"
        if self.failure is not None:
            raise self.failure

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() or close()
            self.failure = exc

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        config = uvicorn.Config(
            create_app(self.settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        redis_client = async_client(self.settings)
        try:
            handler = await make_handler(redis_client, self.settings)
            loops = build_loops(
                redis_client,
                self.settings,
                group=GROUP,
                handler=handler,
                streams_for=event_log_streams(GROUP),
                decode=events.decode,
            )
            worker = asyncio.ensure_future(asyncio.gather(*(loop.run(self.stop) for loop in loops)))
            serving = asyncio.ensure_future(server.serve())
            while not server.started:
                if serving.done():
                    serving.result()  # raises what stopped it
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.02)
            self.ready.set()
            await self.stop.wait()
            server.should_exit = True
            await asyncio.wait_for(serving, timeout=10.0)
            await asyncio.wait_for(worker, timeout=10.0)
        finally:
            await redis_client.aclose()


def _caught_up(client: redis.Redis, partitions: int) -> bool:
    for p in range(partitions):
        try:
            info: Any = client.xinfo_stream(keys.events(p))
            groups: Any = client.xinfo_groups(keys.events(p))
        except ResponseError:
            return False
        group = next((g for g in groups if text(g["name"]) == GROUP), None)
        if group is None or int(group["pending"]) != 0:
            return False
        if text(group["last-delivered-id"]) != text(info["last-generated-id"]):
            return False
    return True


@dataclass
class WebStack:
    """The running stack: its URL, a JSON API client on it and Redis to check the worker."""

    url: str
    settings: Settings
    redis: redis.Redis
    client: httpx.Client
    tokens: dict[str, str] = field(default_factory=dict)

    def call(
        self, method: str, path: str, *, token: str | None = None, json: Any = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        content = None
        if json is not None:
            content = msgspec.json.encode(json)
            headers["Content-Type"] = "application/json"
        return self.client.request(method, path, content=content, headers=headers)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        response = self.call(method, path, **kw)
        assert response.status_code == status, (method, path, response.text)
        return response.json() if response.content else None

    def person(self, handle: str, role: str = "member", **fields: Any) -> str:
        body = {"handle": handle, "kind": "person", "role": role, **fields}
        token: str = self.ok("POST", "/v1/accounts", 201, token=ADMIN_TOKEN, json=body)["token"]
        self.tokens[handle] = token
        return token

    def team(self, handle: str, *posters: str, display_name: str | None = None) -> None:
        body = {"handle": handle, "kind": "team", "display_name": display_name or handle}
        self.ok("POST", "/v1/accounts", 201, token=ADMIN_TOKEN, json=body)
        for poster in posters:
            self.ok("PUT", f"/v1/accounts/{handle}/posters/{poster}", 204, token=ADMIN_TOKEN)

    def follow(self, token: str, handle: str) -> None:
        self.ok("PUT", f"/v1/me/follows/{handle}", token=token, json={})

    def post(self, token: str, text: str, **fields: Any) -> dict[str, Any]:
        if "as_" in fields:
            fields["as"] = fields.pop("as_")
        body: dict[str, Any] = self.ok(
            "POST", "/v1/posts", 202, token=token, json={"text": text, **fields}
        )
        return body

    def dm(self, token: str, to: str, text: str) -> dict[str, Any]:
        body: dict[str, Any] = self.ok(
            "POST", "/v1/dms", 202, token=token, json={"to": to, "text": text}
        )
        return body

    def settle(self, timeout: float = SETTLE_TIMEOUT_S) -> None:
        """Wait (bounded) until the timeline worker handled everything; fail on a dead letter."""
        deadline = time.monotonic() + timeout
        while True:
            for p in range(self.settings.partitions):
                dead = self.redis.xrange(keys.dead_letters(p))
                assert not dead, f"the timeline worker dead-lettered events: {dead}"
            if _caught_up(self.redis, self.settings.partitions):
                return
            assert time.monotonic() < deadline, f"the worker did not catch up within {timeout}s"
            time.sleep(0.01)


@pytest.fixture
def web_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, admin_token=ADMIN_TOKEN, consumer_block_ms=100)


@pytest.fixture
def open_web(
    redis_server: RedisServer,
) -> Iterator[Callable[[Settings], WebStack]]:
    """`open_web(settings)` → a started WebStack (stopped at teardown)."""
    opened: list[tuple[Background, WebStack]] = []

    def open_(settings: Settings) -> WebStack:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        settings = msgspec.structs.replace(settings, public_url=url)
        background = Background(settings, port)
        background.start()
        client = httpx.Client(base_url=url, timeout=10.0)
        stack = WebStack(url=url, settings=settings, redis=redis_server.client(), client=client)
        opened.append((background, stack))
        stack.settle()  # the worker's groups exist, the admin's creation is projected
        return stack

    try:
        yield open_
    finally:
        for background, stack in reversed(opened):
            stack.client.close()
            stack.redis.close()
            background.close()


@pytest.fixture
def web(
    web_settings: Settings,
    open_web: Callable[[Settings], WebStack],
    monkeypatch: pytest.MonkeyPatch,
) -> WebStack:
    # The in-process server waits for its own writes to be projected before it says
    # "Posted."; in CI the browser and Playwright share two cores with it: wait longer.
    monkeypatch.setattr(readback, "WAIT_S", 10.0)
    return open_web(web_settings)


# --- the browser ------------------------------------------------------------------------------
def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium; .ci/run installs it)"
    return None


def needs_browser() -> None:
    """Call at the top of a browser test module, before importing Playwright: without
    Playwright or Chromium the module is skipped, with the reason, except in CI (CI=true),
    where it fails: CI must run the browser tests."""
    reason = _unavailable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    needs_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=10_000)  # assertions that hold pass at once; CI is slow
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


ContextFactory = Callable[..., "BrowserContext"]


@pytest.fixture
def context(browser: Browser, web: WebStack) -> Iterator[ContextFactory]:
    """`context(**options)` → a fresh browser context on the stack (no cookies, 15 s timeouts:
    generous, since an action that works finishes at once, and a busy CI machine is slow).

    Closed before the stack stops, so no live stream holds the server open."""
    opened: list[BrowserContext] = []

    def open_(**options: Any) -> BrowserContext:
        created = browser.new_context(base_url=web.url, **options)
        created.set_default_timeout(15_000)
        opened.append(created)
        return created

    try:
        yield open_
    finally:
        for created in opened:
            with contextlib.suppress(Exception):
                created.close()


def shot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """Save a screenshot of `page` as tests/artifacts/<name>.png (the run's visual record)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(target), full_page=full_page, animations="disabled")
    return target


def sign_in(page: Page, token: str) -> None:
    """Sign in through the form, as a person would: paste the token, press the button."""
    page.goto("/app/signin")
    page.get_by_label("Your token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/app")
