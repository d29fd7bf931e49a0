"""Body size limit as plain ASGI middleware: 413 before the app reads a byte too many."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from muster.api import bodies, scim


class BodyLimit:
    """`max_bytes` for every body, but for the paths `larger` names (inbound email: a whole
    message, attachments and all, up to MUSTER_MAIL_IN_MAX_BYTES)."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.max_bytes)
        declared = _content_length(scope["headers"])
        if declared is not None:
            if declared > limit:
                await self._refuse(scope, receive, send, limit)
                return
            # HTTP/1.1 framing: the server hands the app exactly Content-Length bytes (what
            # follows is the next request), so this body cannot outgrow the limit: no copy.
            await self.app(scope, receive, send)
            return
        # No (usable) Content-Length: chunked. Read the body up front, counting, and hand it on.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, receive, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        message = f"request body is over {limit} bytes"
        if scim.is_scim(scope["path"]):
            response = scim.error(413, message)
        else:
            response = bodies.error(413, "payload_too_large", message)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The one declared Content-Length, or None if absent, repeated or not a number."""
    found = [value for name, value in headers if name == b"content-length"]
    if len(found) != 1 or not found[0].isdigit():
        return None
    return int(found[0])
