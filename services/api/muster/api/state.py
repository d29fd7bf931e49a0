"""What one api process holds for its lifetime, hung on app.state and reached via `state()`."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from fastapi import Request

from muster.answerlinks import Links
from muster.api.backpressure import LagMonitor
from muster.api.metrics import Metrics
from muster.api.oidc import RelyingParty
from muster.api.reads import Reader
from muster.api.tokens import TokenCache
from muster.ids import IdGenerator
from muster.settings import Settings
from muster.writeside import WriteSide


@dataclass
class ApiState:
    settings: Settings
    redis: aioredis.Redis
    ids: IdGenerator
    tokens: TokenCache
    lag: LagMonitor
    metrics: Metrics
    reader: Reader
    writeside: WriteSide
    links: Links
    oidc: RelyingParty | None = None  # company sign-in (MUSTER_OIDC_*), None when off


def state(request: Request) -> ApiState:
    current: ApiState = request.app.state.muster
    return current


def reader(request: Request) -> Reader:
    current: Reader = request.app.state.muster.reader
    return current
