"""Health and readiness: what an orchestrator asks. (Prometheus asks the metrics listener,
an internal address of its own: muster.api.metrics.)"""

from __future__ import annotations

from fastapi import APIRouter, Request
from redis.exceptions import MaxConnectionsError, RedisError
from starlette.responses import Response

from muster import keys
from muster.api import bodies
from muster.api.backpressure import read_lags
from muster.api.openapi import responds
from muster.api.schemas import Status
from muster.api.state import state

router = APIRouter(tags=["operations"])


def expected_groups(partitions: int) -> dict[str, set[str]]:
    """Stream → groups that must exist on it for the system to be ready."""
    expected: dict[str, set[str]] = {}
    for p in range(partitions):
        expected[keys.events(p)] = set(keys.EVENT_LOG_GROUPS)
        for channel in keys.OFFAPP_CHANNELS:
            expected[keys.deliveries(p, channel)] = {keys.GROUP_DELIVERY}
    return expected


@router.get("/healthz", summary="200 while the process runs", responses=responds(200, Status))
async def healthz() -> Response:
    return bodies.json(Status(status="ok"))


@router.get(
    "/readyz",
    summary="200 when Redis answers and every consumer group exists, else 503",
    responses={
        **responds(200, Status),
        # not ready answers with the same Status body, naming what is missing
        503: responds(200, Status, description="Redis down or a consumer group missing")[200],
    },
)
async def readyz(request: Request) -> Response:
    st = state(request)
    expected = expected_groups(st.settings.partitions)
    try:
        await st.redis.ping()
        found = await read_lags(st.redis, list(expected))
    except MaxConnectionsError:
        # every connection is in use: busy serving, not unable to (api/crowd.py) — taking the
        # process out of rotation would only push its crowd onto the others
        return bodies.json(Status(status="ready", detail={"redis": "busy"}))
    except RedisError as exc:
        return bodies.json(Status(status="unavailable", detail={"redis": str(exc)}), 503)
    present: dict[str, set[str]] = {}
    for group in found:
        present.setdefault(group.stream, set()).add(group.group)
    missing = {
        stream: ",".join(sorted(groups - present.get(stream, set())))
        for stream, groups in expected.items()
        if groups - present.get(stream, set())
    }
    if missing:
        return bodies.json(Status(status="missing consumer groups", detail=missing), 503)
    return bodies.json(Status(status="ready"))
