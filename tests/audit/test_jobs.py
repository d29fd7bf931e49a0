"""Replay as an rq job, and the operator's commands end to end.

The job test runs rq's SimpleWorker in this process (burst: it runs what is queued, then
returns). The command test is what an operator does: `muster worker ops` as a process,
`muster replay --wait`, `--attach`, `muster projections checksum`, `muster audit verify`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from redis_server import RedisServer, die_with_parent
from rq import Queue, SimpleWorker
from rq.job import JobStatus

from audit.conftest import system_on
from audit.scenario import THRESHOLD, make_history
from muster import keys
from muster.connection import async_client
from muster.ops import jobs as ops
from muster.ops.replay import ReplayRequest
from muster.projections import families as projections
from muster.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMMAND_TIMEOUT_S = 60


def build_history(settings: Settings) -> None:
    async def build() -> None:
        client = async_client(settings)
        try:
            async with system_on(client, settings) as s:
                await make_history(s)
        finally:
            await client.aclose()

    asyncio.run(build())


def checksum(settings: Settings) -> projections.Checksum:
    async def run() -> projections.Checksum:
        client = async_client(settings)
        try:
            return await projections.checksum(client, settings.partitions)
        finally:
            await client.aclose()

    return asyncio.run(run())


@pytest.fixture
def job_settings(audit_settings: Settings) -> Settings:
    return msgspec.structs.replace(audit_settings, fanout_on_read_threshold=THRESHOLD)


def test_replay_runs_as_one_rq_job_and_reports_progress(
    job_settings: Settings, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_history(job_settings)
    before = checksum(job_settings)
    job = ops.enqueue_replay(sync_redis, ReplayRequest(batch=5))
    assert job.origin == keys.QUEUE_OPS
    assert job.get_status() == JobStatus.QUEUED
    assert job.get_meta()["phase"] == "queued"
    assert job.description == "muster replay"
    assert b"adm-" not in sync_redis.hget(job.key, "data")  # type: ignore[operator]
    monkeypatch.setattr(ops, "_worker_settings", job_settings)
    worker = SimpleWorker([Queue(keys.QUEUE_OPS, connection=sync_redis)], connection=sync_redis)
    assert worker.work(burst=True)
    assert job.get_status() == JobStatus.FINISHED
    meta = job.get_meta()
    result: Any = job.return_value()
    assert meta["phase"] == "done"
    assert meta["done"] == meta["total"] == result["events"] > 30
    assert result["projections"] == list(projections.DEFAULT_REPLAY)
    assert checksum(job_settings) == before


def _env(server: RedisServer, settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
    # no .env from the working directory; no metrics listener on the shared default port
    env.update(MUSTER_ENV_FILE=os.devnull, MUSTER_METRICS_ADDRESS="off")
    env.update(
        MUSTER_REDIS_URL=server.url,
        MUSTER_ARCHIVE_DIR=str(settings.archive_dir),
        MUSTER_FANOUT_ON_READ_THRESHOLD=str(THRESHOLD),
        MUSTER_LOG_FORMAT="json",
        MUSTER_LOG_LEVEL="warning",
    )
    return env


def _muster(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "muster.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_the_operator_commands_end_to_end(
    job_settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> None:
    build_history(job_settings)
    env = _env(redis_server, job_settings)
    first = _muster(env, "projections", "checksum", "--json")
    assert first.returncode == 0, first.stderr
    digest = json.loads(first.stdout)["digest"]
    assert digest == checksum(job_settings).digest

    refused = _muster(env, "replay", "--projections", "deliveries")
    assert refused.returncode == 2
    assert "--redeliver" in refused.stderr
    refused = _muster(env, "replay", "--projections", "posts,nonsense")
    assert refused.returncode == 2
    assert "unknown projection nonsense" in refused.stderr

    log = tmp_path / "ops-worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "muster.cli", "worker", "ops"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=die_with_parent,
        )
    try:
        waited = _muster(env, "replay", "--wait")
        assert waited.returncode == 0, waited.stderr
        assert "replay queued as job" in waited.stdout
        assert "replayed" in waited.stdout
        assert "from the log" in waited.stdout
        again = _muster(env, "projections", "checksum", "--json")
        assert json.loads(again.stdout)["digest"] == digest

        queued = _muster(env, "replay", "--from-archive", "--projections", "timelines,audit")
        assert queued.returncode == 0, queued.stderr
        job_id = queued.stdout.split("job ", 1)[1].split()[0]
        attached = _muster(env, "replay", "--attach", job_id)
        assert attached.returncode == 0, attached.stderr
        assert "from the archive into timelines, audit" in attached.stdout
        assert (
            json.loads(_muster(env, "projections", "checksum", "--json").stdout)["digest"] == digest
        )

        verified = _muster(env, "audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert "partition 0: intact" in verified.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
            raise AssertionError("muster worker ops did not stop on SIGTERM") from None
    assert worker.returncode == 0, log.read_text()


def test_replay_inline_in_worker_processes_and_a_failing_worker_fails_the_command(
    job_settings: Settings, redis_server: RedisServer, sync_redis: redis.Redis
) -> None:
    settings = msgspec.structs.replace(job_settings, partitions=3)
    build_history(settings)
    before = checksum(settings)
    env = {**_env(redis_server, settings), "MUSTER_PARTITIONS": "3"}
    refused = _muster(env, "replay", "--inline", "--workers", "0")
    assert refused.returncode == 2
    assert "--workers: must be between 1 and 1024, got 0" in refused.stderr

    p = keys.partition_of("ops", 3)
    broken = keys.account_log(p, "ops")
    sync_redis.delete(broken)
    sync_redis.set(broken, "not a sorted set")  # every write of ops's posts fails
    failed = _muster(env, "replay", "--inline", "--workers", "3", "--projections", "timelines")
    assert failed.returncode == 1
    assert f"muster replay: replay worker {p} of 3 (partitions {p}) failed" in failed.stderr
    assert "WRONGTYPE" in failed.stderr

    sync_redis.delete(broken)  # fixed: the whole default replay, then ops's logs are back
    done = _muster(env, "replay", "--inline", "--workers", "3")
    assert done.returncode == 0, done.stderr
    assert "replayed" in done.stdout
    assert checksum(settings) == before
