"""The escalation worker dies mid-step; another finishes the step: each person is told once.

The worker is the real `muster worker escalation` process. The first one runs with the
failpoint `escalation.mid_round` armed: it dies (exit 137, no cleanup, no ack — as close to
SIGKILL as Python gets) right after the first page of a step is appended with its event,
before that page's deliveries to the managers are routed and before any other partition is
fired. A second worker, without failpoints, reclaims the due round after
MUSTER_CLAIM_IDLE_MS and fires it again: every person not accounted for must be named in
exactly one RollCallEscalated of the step, and every manager must get exactly one delivery
request about each of their reports, under the id the first worker would have used.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from redis_server import die_with_parent

from escalation.conftest import (
    OpenEscalation,
    eventually,
    logged,
    open_rollcall,
    put_policy,
    requests,
    rounds_done,
    set_manager,
    told,
)
from muster import events
from muster.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CLAIM_IDLE_MS = 1000
PEOPLE = [f"p{i:02d}" for i in range(24)]
MANAGERS = ("m1", "m2", "m3")


class WorkerProcess:
    """`muster worker escalation` with the test's settings, logging to a file."""

    def __init__(self, settings: Settings, log: Path, *failpoints: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
        env.update(MUSTER_ENV_FILE=os.devnull, MUSTER_METRICS_ADDRESS="off")
        env.update(
            MUSTER_REDIS_URL=str(settings.redis_url),
            MUSTER_PARTITIONS=str(settings.partitions),
            MUSTER_CLAIM_IDLE_MS=str(CLAIM_IDLE_MS),
            MUSTER_CONSUMER_BLOCK_MS="100",
            MUSTER_MAX_ATTEMPTS="5",
            MUSTER_LOG_FORMAT="json",
            MUSTER_DATA_DIR=str(log.parent / "var"),
            MUSTER_FAILPOINTS=",".join(failpoints),
        )
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "muster.cli", "worker", "escalation"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def exited(self, within: float = 30.0) -> int:
        deadline = time.monotonic() + within
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker did not exit within {within}s:\n{self.tail()}")
            await asyncio.sleep(0.05)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


async def test_a_worker_killed_mid_step_and_another_tells_each_manager_once(
    escalation_settings: Settings, open_escalation: OpenEscalation, tmp_path: Path
) -> None:
    settings = msgspec.structs.replace(escalation_settings, claim_idle_ms=CLAIM_IDLE_MS)
    async with open_escalation(settings, worker=False) as s:
        await put_policy(s, "crash", steps=[{"after_s": 1, "to": "manager", "channels": ["email"]}])
        boss = await s.person("boss")
        for manager in MANAGERS:
            await s.person(manager, email=f"{manager}@example.com")
        manager_of = {}
        for i, person in enumerate(PEOPLE):
            token = await s.person(person, email=f"{person}@example.com")
            await s.follow(token, "boss")
            manager_of[person] = MANAGERS[i % len(MANAGERS)]
            await set_manager(s, person, manager_of[person])
        rc = await open_rollcall(s, boss, "crash")

        first = WorkerProcess(settings, tmp_path / "first.log", "escalation.mid_round")
        try:
            assert await first.exited() == 137, first.tail()
        finally:
            first.stop()
        assert "failpoint escalation.mid_round hit" in first.tail()
        # mid-step: one page appended, nobody's manager told yet, other partitions untouched
        after_crash = await told(s.redis, rc)
        assert 0 < len(after_crash) < len(PEOPLE)
        assert [r for r in await requests(s.redis) if r.kind == "escalation"] == []

        second = WorkerProcess(settings, tmp_path / "second.log")
        try:

            async def everyone_told() -> bool:
                sent = [r for r in await requests(s.redis) if r.kind == "escalation"]
                return len(await told(s.redis, rc)) >= len(PEOPLE) and len(sent) >= len(PEOPLE)

            await eventually(everyone_told, "the second worker finished the step", 60.0)
            await eventually(lambda: rounds_done(s.redis), "the round acknowledged", 60.0)
        finally:
            second.stop()
        assert second.process.returncode == 0, second.tail()

        notices = await told(s.redis, rc)
        assert Counter(subject for _, subject, _ in notices) == Counter(PEOPLE)
        assert {(subject, target) for _, subject, target in notices} == set(manager_of.items())
        sent = Counter(r.id for r in await requests(s.redis) if r.kind == "escalation")
        assert sent == Counter(f"{rc}-s0l0-{p}.{manager_of[p]}.email" for p in PEOPLE)
        # and the first worker's page is not in the log twice
        fired = await logged(s.redis, events.RollCallEscalated)
        assert sum(len(e.notices) for e in fired) == len(PEOPLE)
