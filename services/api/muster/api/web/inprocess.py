"""The JSON API, called from inside the api process with a session's token.

A call is an ASGI request to this same app (no socket, no serialisation beyond the JSON the
API speaks anyway): the route, its checks, its errors and the events it appends are exactly
those every other client gets. A refusal comes back as `Refused` (an ApiError with the API's
status, code, message and field), which a page shows next to the form that caused it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlencode

import msgspec
from fastapi import Request
from starlette.types import Message

from muster.api.schemas import ErrorOut
from muster.errors import ApiError

T = TypeVar("T")


class Refused(ApiError):
    """The JSON API said no; carries what it said."""

    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        super().__init__(message, code=code, field=field)
        self.status = status


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def refused(self) -> Refused:
        try:
            error = msgspec.json.decode(self.body, type=ErrorOut).error
        except msgspec.MsgspecError:
            return Refused(self.status, "http_error", "The request was refused.", None)
        return Refused(self.status, error.code, error.message, error.field)

    def value(self, tp: type[T]) -> T:
        """The body as `tp`, or the refusal raised."""
        if not self.ok:
            raise self.refused()
        return msgspec.json.decode(self.body, type=tp)


def path(*parts: str) -> str:
    """`/v1/accounts/<part>/...` with each part quoted (handles and ids are, but still)."""
    return "/" + "/".join(quote(p, safe="") for p in parts)


class JsonApi:
    def __init__(self, request: Request, token: str) -> None:
        self.request = request
        self.token = token

    async def call(
        self,
        method: str,
        target: str,
        *,
        body: Any = None,
        query: dict[str, str | int | None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        content = b"" if body is None else msgspec.json.encode(body)
        wanted = {k: str(v) for k, v in (query or {}).items() if v is not None}
        raw_headers = [
            (b"authorization", f"Bearer {self.token}".encode()),
            (b"host", self.request.headers.get("host", "localhost").encode("latin-1")),
            (b"content-length", str(len(content)).encode()),
        ]
        if body is not None:
            raw_headers.append((b"content-type", b"application/json"))
        for name, value in (headers or {}).items():
            raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        parent = self.request.scope
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": parent.get("scheme", "http"),
            "path": unquote(target),  # as a server decodes it; raw_path keeps the quoting
            "raw_path": target.encode(),
            "root_path": "",
            "query_string": urlencode(wanted).encode(),
            "headers": raw_headers,
            "client": parent.get("client"),
            "server": parent.get("server"),
            "state": dict(parent.get("state") or {}),
        }
        status = 500
        chunks: list[bytes] = []
        done = asyncio.Event()
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": content, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        try:
            await self.request.app(scope, receive, send)
        finally:
            done.set()
        return Reply(status, b"".join(chunks))

    async def get(self, target: str, **query: str | int | None) -> Reply:
        return await self.call("GET", target, query=query)
