"""The ingest benchmark's baseline: a raw ASGI callable doing only what ingest cannot avoid.

Read the body, one XADD of it on an event stream, answer 202 with JSON: no framework, no
auth, no validation, no ids. `ingest.py` serves it with the same uvicorn settings as
`muster api`, so the API's posts/s over this one's is what everything else costs. The Redis
client is built by muster.connection like the API's; the URL comes from MUSTER_REDIS_URL.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from muster import events, keys
from muster.connection import async_client
from muster.settings import Settings

Message = dict[str, Any]
STREAM = keys.events(0)
_clients: list[Any] = []


async def app(
    scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Any]
) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            # A connection per request in flight: redis-py's default of 100 refuses the 101st
            # (MaxConnectionsError), which would fail requests at 256 connections.
            settings = Settings(redis_url=os.environ["MUSTER_REDIS_URL"])
            _clients.append(async_client(settings, max_connections=100_000))
            await send({"type": "lifespan.startup.complete"})
        await _clients[0].aclose()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    entry: bytes = await _clients[0].xadd(STREAM, {events.STREAM_FIELD: body})
    payload = b'{"entry":"' + entry + b'"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":  # python bare_asgi.py PORT: uvicorn as `muster api` runs it
    import logging
    import sys

    import uvicorn

    from muster.cli import API_GRACE_S

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        workers=1,
        log_config=None,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=API_GRACE_S,
    )
