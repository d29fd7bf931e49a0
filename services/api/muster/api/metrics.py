"""Prometheus metrics served at /metrics.

Counters of this process (ingest, refusals) live in a per-app registry; figures that belong
to the whole system (stream lag per group, deliveries by channel and outcome) are read from
Redis at scrape time, so any api replica reports the same values for them.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from muster import keys
from muster.api.backpressure import monitored_streams, read_lags
from muster.connection import text


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ingested = Counter(
            "muster_ingest_events",
            "Events appended to the event log by this api process, by type",
            ["type"],
            registry=self.registry,
        )
        self.refused = Counter(
            "muster_ingest_refused",
            "Writes refused by this api process, by reason (backpressure, idempotency, ...)",
            ["reason"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "muster_stream_lag",
            "Entries a consumer group has not yet read",
            ["stream", "group"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "muster_stream_pending",
            "Entries a consumer group has read but not yet acknowledged",
            ["stream", "group"],
            registry=self.registry,
        )
        self.deliveries = Gauge(
            "muster_deliveries",
            "Deliveries by channel and outcome since the database was created",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "muster_dead_letters",
            "Entries waiting in the dead-letter streams",
            registry=self.registry,
        )
        self.dead_groups = Gauge(
            "muster_dead_groups",
            "1 for each consumer group that lags with every consumer silent past "
            "MUSTER_GROUP_DEAD_AFTER (trimming no longer waits for it)",
            ["stream", "group"],
            registry=self.registry,
        )

    async def render(self, redis: aioredis.Redis, partitions: int) -> bytes:
        streams = monitored_streams(partitions) + [
            keys.deliveries(p, c) for p in range(partitions) for c in keys.OFFAPP_CHANNELS
        ]
        for group in await read_lags(redis, streams):
            self.lag.labels(group.stream, group.group).set(group.lag)
            self.pending.labels(group.stream, group.group).set(group.pending)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.DELIVERY_TOTALS)
            for p in range(partitions):
                pipe.xlen(keys.dead_letters(p))
            totals, *dead = await pipe.execute()
        for label, count in totals.items():
            channel, _, outcome = label.decode().partition(":")
            self.deliveries.labels(channel, outcome).set(int(count))
        self.dead_letters.set(sum(dead))
        self.dead_groups.clear()
        for name in await redis.hkeys(keys.DEAD_GROUPS):
            dead_stream, _, dead_group = text(name).rpartition("|")
            self.dead_groups.labels(dead_stream, dead_group).set(1)
        return generate_latest(self.registry)
