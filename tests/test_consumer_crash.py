"""Crash anywhere, lose nothing: real worker processes (tests/consumer_proc.py) killed mid-batch.

Each process runs `muster.worker.serve` against the suite's redis-server. Its handler sleeps
before it records anything, so a process killed during the sleep leaves its batch pending
and unrecorded; another process must then reclaim and record every event exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from consumer_proc import HANDLED
from redis_server import RedisServer, die_with_parent

from muster import events, keys
from muster.ids import IdGenerator

pytestmark = pytest.mark.slow

PROC = Path(__file__).with_name("consumer_proc.py")
GROUP = "crash-test"
STREAM = keys.events(0)
_ids = IdGenerator(node=2)


def post(n: int) -> events.PostPublished:
    return events.PostPublished(
        id=_ids.next(),
        actor="ops",
        at=events.utcnow(),
        author="ops",
        as_account="ops",
        text=f"#{n}",
    )


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def append_all(client: redis.Redis, sent: list[events.PostPublished]) -> None:
    with client.pipeline(transaction=False) as pipe:
        for event in sent:
            pipe.xadd(STREAM, {events.STREAM_FIELD: events.encode(event)})
        pipe.execute()


class Worker:
    """One consumer_proc.py process, logging (JSON lines) to a file for post-mortems."""

    def __init__(
        self, server: RedisServer, tmp_path: Path, name: str, *, sleep: float, claim_idle_ms: int
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
        # no .env from the working directory; no metrics listener on the shared default port
        env.update(MUSTER_ENV_FILE=os.devnull, MUSTER_METRICS_ADDRESS="off")
        env.update(
            MUSTER_REDIS_URL=server.url,
            MUSTER_CLAIM_IDLE_MS=str(claim_idle_ms),
            MUSTER_CONSUMER_BATCH="50",
            MUSTER_CONSUMER_BLOCK_MS="200",
            MUSTER_MAX_ATTEMPTS="3",
            MUSTER_LOG_FORMAT="json",
            MUSTER_DATA_DIR=str(tmp_path / "var"),
        )
        self.name = name
        self.log_path = tmp_path / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(PROC), "--group", GROUP, "--sleep", str(sleep)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def owns(self, name: object) -> bool:
        """Consumer names are host-pid-random (muster.consumer.consumer_name)."""
        return text(name).rsplit("-", 2)[1] == str(self.pid)

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                lines.append(record)
        return lines

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.process.returncode}:\n"
                + self.log_path.read_text(errors="replace")[-4000:]
            )

    def stop(self, sig: signal.Signals, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)
            raise AssertionError(f"{self.name} ignored {sig.name} for {timeout}s") from None


@contextmanager
def workers(server: RedisServer, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """Start workers with `start(name, sleep=..., claim_idle_ms=...)`; all are killed at exit."""
    started: list[Worker] = []

    def start(name: str, *, sleep: float, claim_idle_ms: int) -> Worker:
        worker = Worker(server, tmp_path, name, sleep=sleep, claim_idle_ms=claim_idle_ms)
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.process.kill()
            worker.process.wait(timeout=10)


def wait_until(condition: Callable[[], bool], what: str, *, within: float, alive: Worker) -> None:
    deadline = time.monotonic() + within
    while not condition():
        alive.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {within}s waiting until {what}; {alive.name} log:\n"
                + alive.log_path.read_text(errors="replace")[-4000:]
            )
        time.sleep(0.02)


def pending_of(client: redis.Redis, worker: Worker) -> list[str]:
    rows = client.xpending_range(STREAM, GROUP, min="-", max="+", count=10_000)
    return [text(row["message_id"]) for row in rows if worker.owns(row["consumer"])]


def total_pending(client: redis.Redis) -> int:
    return int(client.xpending(STREAM, GROUP)["pending"])


def group_exists(client: redis.Redis) -> bool:
    if not client.exists(STREAM):
        return False
    return any(g["name"] == GROUP.encode() for g in client.xinfo_groups(STREAM))


def test_kill_9_mid_batch_loses_nothing_and_repeats_nothing(
    redis_server: RedisServer, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    sent = [post(n) for n in range(200)]
    with workers(redis_server, tmp_path) as start:
        # A never reclaims its own batch while it sleeps (idle timeout far above the sleep)
        a = start("A", sleep=60.0, claim_idle_ms=60_000)
        append_all(sync_redis, sent)

        def a_holds_a_batch() -> bool:
            return group_exists(sync_redis) and len(pending_of(sync_redis, a)) > 0

        wait_until(a_holds_a_batch, "A takes a batch", within=20, alive=a)
        taken = pending_of(sync_redis, a)
        assert 0 < len(taken) <= 50
        assert sync_redis.hlen(HANDLED) == 0  # A is asleep inside its handler

        os.kill(a.pid, signal.SIGKILL)
        assert a.process.wait(timeout=10) == -signal.SIGKILL
        assert pending_of(sync_redis, a) == taken  # the dead consumer still owns them

        b = start("B", sleep=0.0, claim_idle_ms=1_500)

        def all_recorded_and_acked() -> bool:
            return sync_redis.hlen(HANDLED) == len(sent) and total_pending(sync_redis) == 0

        wait_until(all_recorded_and_acked, "B records and acks every event", within=30, alive=b)
        assert b.stop(signal.SIGTERM) == 0

    counts = {text(k): int(v) for k, v in sync_redis.hgetall(HANDLED).items()}
    assert set(counts) == {event.id for event in sent}  # none lost
    assert set(counts.values()) == {1}  # none handled twice
    assert sync_redis.xlen(keys.dead_letters(0)) == 0
    reclaimed = sum(
        int(str(line["count"])) for line in b.log_lines() if line.get("event") == "reclaimed"
    )
    assert reclaimed == len(taken)  # A's batch came back through XAUTOCLAIM


def test_sigterm_finishes_and_acks_the_batch_in_hand(
    redis_server: RedisServer, sync_redis: redis.Redis, tmp_path: Path
) -> None:
    sent = [post(n) for n in range(20)]
    append_all(sync_redis, sent)
    with workers(redis_server, tmp_path) as start:
        w = start("W", sleep=5.0, claim_idle_ms=60_000)  # a window the look cannot miss

        def holds_all() -> bool:
            return group_exists(sync_redis) and len(pending_of(sync_redis, w)) == len(sent)

        wait_until(holds_all, "W takes the whole batch", within=20, alive=w)
        assert sync_redis.hlen(HANDLED) == 0
        assert w.stop(signal.SIGTERM, timeout=20) == 0

    counts = {text(k): int(v) for k, v in sync_redis.hgetall(HANDLED).items()}
    assert counts == {event.id: 1 for event in sent}  # the batch in hand was finished...
    assert total_pending(sync_redis) == 0  # ...and acked before the process exited
    assert any(line.get("event") == "worker stopped" for line in w.log_lines())
