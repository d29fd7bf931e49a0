"""An API process's state, opened once: the api's lifespan and `muster mail-in` (which writes
through the same code without serving HTTP) build it the same way."""

from __future__ import annotations

from muster import connection, keys
from muster.answerlinks import Links
from muster.api import crowd
from muster.api.backpressure import LagMonitor
from muster.api.metrics import Metrics
from muster.api.oidc import RelyingParty
from muster.api.reads import Reader
from muster.api.state import ApiState
from muster.api.tokens import TokenCache
from muster.ids import IdGenerator
from muster.settings import Settings
from muster.writeside import WriteSide


async def open_state(settings: Settings, *, oidc: bool = False) -> ApiState:
    """Checks the Redis topology against the settings and takes this process's node number
    (its ids' node part); nothing is started in the background."""
    redis = crowd.request_client(settings)
    await connection.check_topology(redis, settings)
    node = int(await redis.incr(keys.NODE_COUNTER))
    return ApiState(
        settings=settings,
        redis=redis,
        ids=IdGenerator(node),
        tokens=TokenCache(redis, settings.partitions),
        lag=LagMonitor(redis, settings.partitions, settings.max_lag),
        metrics=Metrics(),
        reader=Reader(redis, settings.partitions),
        writeside=WriteSide(redis, partitions=settings.partitions),
        links=Links(redis, settings.partitions),
        oidc=RelyingParty(settings) if oidc and settings.oidc_enabled else None,
    )
