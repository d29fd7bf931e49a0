"""An HTTP client of the api that keeps trying until it gets an answer that means something.

A chaos run's clients behave as the docs ask: what the api refused while Redis was away
(503 `unavailable`), under backpressure or a crowd (429, `Retry-After`), and what never got an
answer (connection refused or reset while the api was killed, a timeout) is sent again, with
the same `Idempotency-Key` for posts and DMs. A write counts as acknowledged only once it got
a 2xx. Other 4xx answers are final. A 500 is sent again too, but counted: the api should never
answer one, whatever happens to Redis.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

RETRY_DEADLINE_S = 90.0
"""How long one request is sent again before the run gives up on it (and fails)."""
BACKOFF_S = (0.05, 1.0)
"""Pause before sending again what got no answer: doubling from the first to the second."""
MAX_RETRY_AFTER_S = 5.0
"""A Retry-After is honoured up to this (backpressure asks for up to 60 s)."""


class GaveUp(Exception):
    """A request got no meaningful answer within RETRY_DEADLINE_S."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any  # decoded JSON, the text for other content, None when empty
    headers: httpx.Headers
    sent: float  # time.monotonic() of the first try
    answered: float  # time.monotonic() of the final answer
    causes: tuple[str, ...]  # why each earlier try was sent again

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def code(self) -> str:
        """The error code of an error body ("" for anything else)."""
        if isinstance(self.body, dict):
            error = self.body.get("error")
            if isinstance(error, dict):
                return str(error.get("code", ""))
        return ""


@dataclass
class ClientStats:
    requests: int = 0
    retried: Counter[str] = field(default_factory=Counter)  # cause → tries sent again
    server_errors: list[str] = field(default_factory=list)  # "METHOD path: body" of each 500


class Api:
    def __init__(self, base_url: str, stats: ClientStats, *, seed: int = 0) -> None:
        self.client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(10.0, connect=2.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )
        self.stats = stats
        self._jitter = random.Random(seed)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        deadline_s: float = RETRY_DEADLINE_S,
    ) -> Answer:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        content = None
        if json is not None:
            content = msgspec.json.encode(json)
            all_headers["Content-Type"] = "application/json"
        sent = time.monotonic()
        deadline = sent + deadline_s
        tries = 0
        causes: list[str] = []
        pause = BACKOFF_S[0]
        while True:
            tries += 1
            self.stats.requests += 1
            cause: str
            wait = pause * self._jitter.uniform(0.5, 1.0)
            try:
                response = await self.client.request(
                    method, path, content=content, headers=all_headers, params=params
                )
            except httpx.TransportError as exc:
                cause = f"no answer ({type(exc).__name__})"
            else:
                status = response.status_code
                if status not in (429, 500, 502, 503, 504):
                    return Answer(
                        status,
                        _body(response),
                        response.headers,
                        sent,
                        time.monotonic(),
                        tuple(causes),
                    )
                body = _body(response)
                code = ""
                if isinstance(body, dict) and isinstance(body.get("error"), dict):
                    code = str(body["error"].get("code", ""))
                cause = f"{status} {code}".strip()
                if status == 500:
                    self.stats.server_errors.append(f"{method} {path}: {response.text[:300]}")
                retry_after = response.headers.get("Retry-After")
                if retry_after is not None and retry_after.isdigit():
                    # as asked (a little later, so a crowd does not come back at once)
                    wait = min(float(retry_after), MAX_RETRY_AFTER_S) * self._jitter.uniform(1, 1.2)
            self.stats.retried[cause] += 1
            causes.append(cause)
            if time.monotonic() > deadline:
                raise GaveUp(
                    f"{method} {path}: still {cause} after {deadline_s}s and {tries} tries"
                )
            await asyncio.sleep(wait)
            pause = min(pause * 2, BACKOFF_S[1])

    async def ok(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> Any:
        """The call, which must answer 2xx; its body."""
        answer = await self.call(method, path, token=token, **kw)
        if not answer.ok:
            raise AssertionError(f"{method} {path} answered {answer.status}: {answer.body}")
        return answer.body

    async def pages(
        self, path: str, *, token: str | None = None, limit: int = 100, oldest_first: bool = False
    ) -> list[dict[str, Any]]:
        """Every item of a list paged with `before`: newest-first lists (timelines, account
        logs) continue from the last item, oldest-first ones (a conversation) from the first."""
        items: list[dict[str, Any]] = []
        for _ in range(10_000):
            params: dict[str, Any] = {"limit": limit}
            if items:
                params["before"] = items[0]["id"] if oldest_first else items[-1]["id"]
            page = await self.ok("GET", path, token=token, params=params)
            assert isinstance(page, list)
            if oldest_first:
                items[:0] = page
            else:
                items.extend(page)
            if len(page) < limit:
                return items
        raise AssertionError(f"paging {path} never ended")


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            return response.json()
        except ValueError:
            return response.text
    return response.text
