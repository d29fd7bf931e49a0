"""Prometheus metrics, served on an internal listener (MUSTER_METRICS_ADDRESS), never the public port.

Counters of the API's processes (ingest, refusals) are `Metrics`, one per app. `muster api`
runs prometheus_client in multiprocess mode: it points PROMETHEUS_MULTIPROC_DIR at a private
directory of its own before anything imports prometheus_client, so every uvicorn worker it
starts (MUSTER_API_WORKERS) writes its counts there, and its one `MetricsListener`, a thread
of the `muster api` process that supervises the workers, adds them up at each scrape. A
worker that is restarted keeps adding to the same totals.

Figures that belong to the whole system (stream lag per group, deliveries by channel and
outcome, dead letters, dead groups) are read from Redis at scrape time (`read_system`), so
every API replica reports the same values for them. This module never serves the public
HTTP app and never writes to Redis.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import redis.asyncio as aioredis
import structlog
from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from muster import keys
from muster.api.backpressure import monitored_streams, read_lags
from muster.connection import async_client, text
from muster.settings import Settings, split_address

log = structlog.get_logger("muster.api.metrics")


class Metrics:
    """The counters one API process increments (all of `muster api`'s processes, added up,
    are what the listener serves)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.ingested = Counter(
            "muster_ingest_events",
            "Events appended to the event log by the API's processes, by type",
            ["type"],
            registry=self.registry,
        )
        self.refused = Counter(
            "muster_ingest_refused",
            "Writes refused by the API's processes, by reason (backpressure, idempotency, ...)",
            ["reason"],
            registry=self.registry,
        )


def _system_families() -> dict[str, GaugeMetricFamily]:
    return {
        "lag": GaugeMetricFamily(
            "muster_stream_lag",
            "Entries a consumer group has not yet read",
            labels=["stream", "group"],
        ),
        "pending": GaugeMetricFamily(
            "muster_stream_pending",
            "Entries a consumer group has read but not yet acknowledged",
            labels=["stream", "group"],
        ),
        "deliveries": GaugeMetricFamily(
            "muster_deliveries",
            "Deliveries by channel and outcome since the database was created",
            labels=["channel", "outcome"],
        ),
        "dead_letters": GaugeMetricFamily(
            "muster_dead_letters", "Entries waiting in the dead-letter streams"
        ),
        "escalations": GaugeMetricFamily(
            "muster_rollcall_escalations",
            "People told by roll-call escalation rounds since the database was created, by "
            "whom the round told (recipient, manager, fallback; reminds as recipient)",
            labels=["to"],
        ),
        "overdue": GaugeMetricFamily(
            "muster_rollcall_timer_overdue_seconds",
            "How long the most overdue escalation round has waited in a timer set (0: none "
            "due; growing: no escalation worker is moving them)",
        ),
        "dead_groups": GaugeMetricFamily(
            "muster_dead_groups",
            "1 for each consumer group that lags with every consumer silent past "
            "MUSTER_GROUP_DEAD_AFTER (trimming no longer waits for it)",
            labels=["stream", "group"],
        ),
    }


async def read_system(redis: aioredis.Redis, partitions: int) -> list[Metric]:
    """The system-wide gauges, as they stand in Redis now."""
    families = _system_families()
    streams = (
        monitored_streams(partitions)
        + [keys.deliveries(p, c) for p in range(partitions) for c in keys.OFFAPP_CHANNELS]
        + [keys.rollcall_due(p) for p in range(partitions)]
    )
    for group in await read_lags(redis, streams):
        families["lag"].add_metric([group.stream, group.group], group.lag)
        families["pending"].add_metric([group.stream, group.group], group.pending)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.DELIVERY_TOTALS)
        pipe.hgetall(keys.ESCALATION_TOTALS)
        pipe.time()
        for p in range(partitions):
            pipe.zrange(keys.rollcall_timers(p), 0, 0, withscores=True)
        for p in range(partitions):
            pipe.xlen(keys.dead_letters(p))
        totals, escalated, now, *rest = await pipe.execute()
    oldest, dead = rest[:partitions], rest[partitions:]
    now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
    due = [score for first in oldest for _, score in first]
    families["overdue"].add_metric([], max([0.0, *((now_ms - d) / 1000 for d in due)]))
    for label, count in escalated.items():
        families["escalations"].add_metric([text(label)], int(count))
    for label, count in totals.items():
        channel, _, outcome = text(label).partition(":")
        families["deliveries"].add_metric([channel, outcome], int(count))
    families["dead_letters"].add_metric([], sum(dead))
    for name in await redis.hkeys(keys.DEAD_GROUPS):
        dead_stream, _, dead_group = text(name).rpartition("|")
        families["dead_groups"].add_metric([dead_stream, dead_group], 1)
    return list(families.values())


class SystemCollector(Collector):
    """`read_system` at each scrape, on a client of its own (the scrape runs in the
    listener's thread, outside any API worker's event loop)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def describe(self) -> Iterable[Metric]:
        return list(_system_families().values())

    def collect(self) -> Iterable[Metric]:
        async def read() -> list[Metric]:
            client = async_client(self.settings)
            try:
                return await read_system(client, self.settings.partitions)
            finally:
                await client.aclose()

        try:
            return asyncio.run(read())
        except (RedisError, OSError) as exc:
            # The process counters are still worth serving; the gap says Redis is away.
            log.warning("metrics: cannot read Redis", error=str(exc))
            return []


@dataclass
class MetricsListener:
    """The `/metrics` HTTP listener of one `muster api`, in a thread of its own."""

    server: WSGIServer
    thread: threading.Thread
    directory: Path

    @classmethod
    def start(cls, settings: Settings, directory: Path) -> MetricsListener:
        """Serve the counters the API's processes write under `directory` (their
        PROMETHEUS_MULTIPROC_DIR) and the system gauges on MUSTER_METRICS_ADDRESS."""
        assert settings.metrics_address is not None
        host, port = split_address(settings.metrics_address)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
        registry.register(SystemCollector(settings))
        server, thread = start_http_server(port, addr=host, registry=registry)
        log.info(
            "metrics listening",
            url=f"http://{settings.metrics_address}/metrics",
            directory=str(directory),
        )
        return cls(server, thread, directory)

    def close(self) -> None:
        """Stop serving and drop the counters' directory; once, however often it is called."""
        if not self.thread.is_alive():
            return
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        shutil.rmtree(self.directory, ignore_errors=True)
