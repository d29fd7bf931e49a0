"""Operator jobs on rq: `muster replay` enqueues, `muster worker ops` runs, `--wait` watches.

A replay is one rq job on keys.QUEUE_OPS — never one job per event: rq's forking worker does
~100-150 jobs a second, and a replay applies tens of thousands of events a second inside its
one job. The job reports how far it got in `job.meta` (phase, done, total, events/s), which
`watch` turns into a progress bar. `muster worker ops` also serves keys.QUEUE_SCHEDULED (timed
jobs) and runs rq's scheduler.

Job functions get their settings from the worker process that runs them (`run_worker` keeps
them), so no secret is ever written into a job's arguments in Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis
import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rq import Queue, Worker, get_current_job
from rq.job import Job, JobStatus

from muster import keys
from muster.connection import async_client, rq_client
from muster.ops.replay import ReplayRequest, ReplayResult, replay
from muster.settings import Settings, load_settings

log = structlog.get_logger("muster.ops.jobs")

JOB_TIMEOUT_S = 24 * 3600
"""A replay may run this long before rq stops it."""
RESULT_TTL_S = 7 * 24 * 3600
"""How long a finished job (its result and progress) can still be looked at."""
PROGRESS_EVERY_S = 0.5
_DONE = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}

_worker_settings: Settings | None = None


def _settings() -> Settings:
    return _worker_settings if _worker_settings is not None else load_settings()


# --- the job ------------------------------------------------------------------------------------
class _JobProgress:
    """Writes progress into the job's meta, at most every PROGRESS_EVERY_S (and at the end)."""

    def __init__(self, job: Job | None) -> None:
        self.job = job
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int, rate: float) -> None:
        now = time.monotonic()
        if self.job is None or (now - self.last < PROGRESS_EVERY_S and phase != "done"):
            return
        self.last = now
        self.job.meta.update(phase=phase, done=done, total=total, rate=round(rate, 1))
        self.job.save_meta()  # type: ignore[no-untyped-call]


async def run_replay(
    settings: Settings,
    request: ReplayRequest,
    progress: Callable[[str, int, int, float], None] | None = None,
) -> ReplayResult:
    client = async_client(settings)
    try:
        return await replay(client, settings, request, progress)
    finally:
        await client.aclose()


def replay_job(request: dict[str, Any]) -> dict[str, Any]:
    """The rq job: one whole replay."""
    parsed = msgspec.convert(request, ReplayRequest)
    result = asyncio.run(run_replay(_settings(), parsed, _JobProgress(get_current_job())))
    out: dict[str, Any] = msgspec.to_builtins(result)
    return out


def enqueue_replay(connection: redis.Redis, request: ReplayRequest) -> Job:
    queue = Queue(keys.QUEUE_OPS, connection=connection)
    return queue.enqueue(
        replay_job,
        msgspec.to_builtins(request),
        job_timeout=JOB_TIMEOUT_S,
        result_ttl=RESULT_TTL_S,
        failure_ttl=RESULT_TTL_S,
        description=describe(request),
        meta={"phase": "queued", "done": 0, "total": 0, "rate": 0.0},
    )


def describe(request: ReplayRequest) -> str:
    parts = ["muster replay"]
    if request.projections:
        parts.append("--projections " + ",".join(request.projections))
    if request.from_archive:
        parts.append("--from-archive")
    if request.since:
        parts.append(f"--since {request.since}")
    if request.redeliver:
        parts.append("--redeliver")
    if request.workers:
        parts.append(f"--workers {request.workers}")
    return " ".join(parts)


# --- the worker ----------------------------------------------------------------------------------
class _Worker(Worker):
    """rq's worker, with its command channel polled every PUBSUB_POLL_S instead of 60 s.

    On SIGTERM rq unsubscribes and stops that channel's thread, and since redis-py 8 stopping
    the thread waits for its current poll: with rq's 60 s poll, `muster worker ops` could take
    a minute to stop (a supervisor, or Kubernetes, kills it first)."""

    def subscribe(self) -> None:
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(  # type: ignore[assignment]  # rq types it None
            sleep_time=PUBSUB_POLL_S,
            daemon=True,
            exception_handler=self._pubsub_exception_handler,
        )


PUBSUB_POLL_S = 0.5
"""How long rq's command-channel thread waits per poll: bounds how long a stop takes."""


def run_worker(settings: Settings, *, burst: bool = False) -> int:
    """`muster worker ops`: an rq worker for QUEUE_OPS and QUEUE_SCHEDULED, with the scheduler."""
    global _worker_settings
    _worker_settings = settings
    connection = rq_client(settings)
    try:
        queues = [
            Queue(keys.QUEUE_OPS, connection=connection),
            Queue(keys.QUEUE_SCHEDULED, connection=connection),
        ]
        worker = _Worker(queues, connection=connection)
        log.info("ops worker started", queues=[q.name for q in queues])
        worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level.upper())
    finally:
        connection.close()
    return 0


# --- watching ------------------------------------------------------------------------------------
def watch(job: Job, *, console: Console | None = None, poll_s: float = PROGRESS_EVERY_S) -> bool:
    """Show the job's progress until it ends; True when it finished well."""
    columns = (
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>10} events/s"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("queued", total=None, rate="-")
        while True:
            status = job.get_status(refresh=True)
            meta = job.get_meta(refresh=True)
            total = int(meta.get("total") or 0)
            bar.update(
                task,
                description=str(meta.get("phase") or status),
                completed=int(meta.get("done") or 0),
                total=total or None,
                rate=f"{float(meta.get('rate') or 0):,.0f}",
            )
            if status in _DONE:
                return status == JobStatus.FINISHED
            time.sleep(poll_s)


def failure_of(job: Job) -> str:
    result = job.latest_result()
    if result is not None and result.exc_string:
        return str(result.exc_string).strip().splitlines()[-1]
    return f"the job ended as {job.get_status()}"
