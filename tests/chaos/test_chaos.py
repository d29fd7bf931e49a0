"""The short chaos run, for CI: see engine.py for what it does and checks.py for what it checks.

Two processes of each worker kind, `muster api` over real HTTP, redis-server with AOF
`appendfsync always`; for 18 s a mixed workload while workers, the api and Redis are killed
and receivers fail; then everything must settle and every check pass. About 30 s on an idle
2-core machine, 35-45 s with both cores busy with other work. The seed is fixed (the same plan of operations and faults in every CI run;
the timing, and so the interleaving, is never quite the same); `CHAOS_SEED=<n> pytest
tests/chaos` runs another plan, `CHAOS_SEED=random` a new one each time. The report, seed
included, is printed, and the run's files (every process's log, the Redis data, the archive)
stay in pytest's tmp_path.
The longer run is a command: `python tests/benchmarks/chaos.py`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from chaos.engine import Config, run
from chaos.processes import RunSettings
from chaos.workload import Shape

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


DEFAULT_SEED = 20_261_206


def seed() -> int:
    chosen = os.environ.get("CHAOS_SEED", "")
    if chosen == "random":
        return random.SystemRandom().randrange(1, 1_000_000)
    return int(chosen) if chosen else DEFAULT_SEED


async def test_a_chaos_run_loses_repeats_and_leaks_nothing(tmp_path: Path) -> None:
    config = Config(
        seed=seed(),
        directory=tmp_path,  # logs, Redis data and the archive stay for a post-mortem
        seconds=18.0,
        faults=11,
        settle_within=45.0,
        shape=Shape(members=16, externals=3, lanes=6, rate=16.0, budget=500),
        run=RunSettings(partitions=3, claim_idle_ms=1500, copies=2, max_lag=20),
    )
    report = await run(config)
    print(report.text())
    assert report.passed, report.text()


@pytest.mark.timeout(240)  # 36-61 s here; a cluster's start and failover wait on a busy CI
async def test_a_chaos_run_on_a_redis_cluster_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """The same run on a local Redis Cluster of 3 masters with a replica each (every node
    `appendfsync always`), 8 partitions, MUSTER_WRITE_REPLICAS=1: a master's process is
    killed (its replica takes over, Muster's processes carry on without a restart) and slots
    holding a partition move to another master while the workload runs; the same checks."""
    config = Config(
        seed=seed(),
        directory=tmp_path,
        seconds=18.0,
        faults=11,
        settle_within=60.0,
        shape=Shape(members=16, externals=3, lanes=6, rate=16.0, budget=500),
        run=RunSettings(
            partitions=8, claim_idle_ms=1500, copies=2, max_lag=20, masters=3, write_replicas=1
        ),
    )
    report = await run(config)
    print(report.text())
    assert report.passed, report.text()
    done = report.fault_log.counts()
    assert done["fail over a master"] >= 1
    assert done["reshard slots"] >= 1
