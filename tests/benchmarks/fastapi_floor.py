"""The framework's share of the ingest benchmark: the bare endpoint's one XADD, as a FastAPI route.

`ingest.py --floor` serves this next to the bare ASGI callable and the real API: the API
cannot beat this figure without leaving FastAPI's request path for its hot route, so it
tells how much of the gap is FastAPI/Starlette and how much is Muster's own work.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.responses import Response

from muster import events, keys
from muster.connection import async_client
from muster.settings import Settings

STREAM = keys.events(0)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.redis = async_client(Settings(redis_url=os.environ["MUSTER_REDIS_URL"]))
    yield
    await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/posts", status_code=202)
async def create_post(request: Request) -> Response:
    entry: bytes = await request.app.state.redis.xadd(
        STREAM, {events.STREAM_FIELD: await request.body()}
    )
    return Response(b'{"entry":"' + entry + b'"}', 202, media_type="application/json")


if __name__ == "__main__":  # python fastapi_floor.py PORT: uvicorn as `muster api` runs it
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
